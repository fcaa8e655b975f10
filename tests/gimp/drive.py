"""The in-GIMP scenario, run by ``gimp-console --batch-interpreter=python-fu-eval`` (see test_gimp_e2e.py).

It calls the installed plug-in's PDB procedures the way a script would, against a real backend, and
writes a JSON result file judged by the test (never GIMP's exit code). Runs in GIMP's own Python
(3.13 or 3.14), with ``Gimp`` already imported by python-fu-eval; nothing from the host's venv.
"""

import json
import os
import sys
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

OUT = os.environ["SFUMATO_GIMP_TEST_OUT"]
SERVER = os.environ["SFUMATO_GIMP_TEST_SERVER"]
TRACE = os.environ.get("SFUMATO_GIMP_TRACE", "")
SIZE = 128
PREVIEW = "Sfumato preview"
U8 = "R'G'B'A u8"

checks: list[dict] = []
started = time.monotonic()


def check(name, ok, detail=""):
    checks.append(
        {"name": name, "ok": bool(ok), "detail": str(detail)[:500], "t": round(time.monotonic() - started, 1)}
    )


def write(error=""):
    body = {
        "checks": checks,
        "error": error,
        "seconds": round(time.monotonic() - started, 1),
        "gimp": Gimp.version(),
        "python": sys.version.split()[0],
    }
    with open(OUT + ".tmp", "w") as f:
        json.dump(body, f, indent=2)
    os.replace(OUT + ".tmp", OUT)


# ---------------------------------------------------------------------------- helpers


def new_image(w, h, base=Gimp.ImageBaseType.RGB, precision=None):
    if precision is None:
        return Gimp.Image.new(w, h, base)
    return Gimp.Image.new_with_precision(w, h, base, precision)


def add_layer(image, name, w, h, data=None, fmt=U8, kind=Gimp.ImageType.RGBA_IMAGE, offsets=(0, 0)):
    layer = Gimp.Layer.new(image, name, w, h, kind, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    layer.set_offsets(*offsets)
    if data is not None:
        write_pixels(layer, data, fmt)
    return layer


def write_pixels(layer, data, fmt=U8):
    w, h = layer.get_width(), layer.get_height()
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), fmt, data)
    buf.flush()
    layer.update(0, 0, w, h)


def pixels(drawable, fmt=U8, rect=None):
    x, y, w, h = rect or (0, 0, drawable.get_width(), drawable.get_height())
    return bytes(drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE))


def pattern(w, h):
    out = bytearray(w * h * 4)
    for y in range(h):
        for x in range(w):
            i = (y * w + x) * 4
            out[i : i + 4] = bytes(((x * 2) % 256, (y * 2) % 256, (x * 7 + y) % 256, 255))
    return bytes(out)


def names(image):
    return [layer.get_name() for layer in image.get_layers()]


def bounds(layer):
    _, x, y = layer.get_offsets()
    return (x, y, layer.get_width(), layer.get_height())


def projection(image):
    """The composite as a painter sees it: merge a duplicate (the image itself stays as it is)."""
    dup = image.duplicate()
    merged = dup.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE)
    data = pixels(merged)
    dup.delete()
    return data


def changed(before, after, coverage, value):
    """How many pixels whose selection coverage is ``value`` differ between two RGBA8 composites."""
    return sum(
        1 for i, c in enumerate(coverage) if c == value and after[4 * i : 4 * i + 4] != before[4 * i : 4 * i + 4]
    )


def run(procedure, image, drawable, **args):
    """Call a Sfumato procedure like any script: (status, error text, n-layers, seed)."""
    proc = Gimp.get_pdb().lookup_procedure(procedure)
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [drawable])
    cfg.set_property("server-url", SERVER)
    cfg.set_property("steps", 8)
    for key, value in args.items():
        cfg.set_property(key.replace("_", "-"), value)
    res = proc.run(cfg)
    status = int(res.index(0))
    if status == int(Gimp.PDBStatusType.SUCCESS):
        return status, "", res.index(1), res.index(2)
    return status, str(res.index(1)) if res.length() > 1 else "", 0, -1


def trace():
    if not TRACE or not os.path.exists(TRACE):
        return []
    with open(TRACE) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    os.remove(TRACE)
    return lines


SUCCESS = int(Gimp.PDBStatusType.SUCCESS)
CALLING_ERROR = int(Gimp.PDBStatusType.CALLING_ERROR)  # refused before anything was sent


# ---------------------------------------------------------------------------- the scenario


def scenario():
    check("procedures registered", all(Gimp.get_pdb().procedure_exists(p) for p in PROCS), PROCS)

    image = new_image(SIZE, SIZE)
    add_layer(image, "Background", SIZE, SIZE, bytes((255, 255, 255, 255)) * SIZE * SIZE)
    src = add_layer(image, "Paint", SIZE, SIZE, pattern(SIZE, SIZE))
    image.set_selected_layers([src])
    source_before = pixels(src)
    trace()

    # (a) restyle the layer (no selection)
    status, error, n, seed = run("python-fu-sfumato-restyle", image, src, prompt="a test", strength=0.5, seed=7)
    check("restyle: succeeded, 1 layer, seed 7", (status, n, seed) == (SUCCESS, 1, 7), f"{status} {error} {n} {seed}")
    result = image.get_layer_by_name("a test [seed 7]")
    check("restyle: result layer exists", result is not None, names(image))
    check("restyle: result covers the layer", bounds(result) == (0, 0, SIZE, SIZE), bounds(result))
    layer_order = names(image)
    check(
        "restyle: result layer right above the source",
        layer_order.index("a test [seed 7]") == layer_order.index("Paint") - 1,
        layer_order,
    )
    check("restyle: source layer untouched", pixels(src) == source_before)
    restyled = pixels(result)
    check("restyle: the result differs from the source", restyled != source_before)
    check("restyle: result is opaque like the source", set(restyled[3::4]) == {255}, sorted(set(restyled[3::4]))[:5])
    events = trace()
    shown = [e for e in events if e["event"] == "preview"]
    check(
        "restyle: previews shown in one locked layer above the source",
        shown
        and all(e["locked"] and e["layers"].count(PREVIEW) == 1 for e in shown)
        and all(e["layers"].index(PREVIEW) == e["layers"].index("Paint") - 1 for e in shown),
        events,
    )
    check("restyle: preview layer removed", PREVIEW not in names(image), names(image))
    check(
        "restyle: the painter's layer stays selected",
        [layer.get_name() for layer in image.get_selected_layers()] == ["Paint"],
        [layer.get_name() for layer in image.get_selected_layers()],
    )

    # (b) inpaint a soft (feathered) selection on the restyled layer
    image.set_selected_layers([result])
    image.select_ellipse(Gimp.ChannelOps.REPLACE, 34, 30, 60, 60)
    Gimp.Selection.feather(image, 12.0)
    coverage = pixels(image.get_selection(), "Y u8", (0, 0, SIZE, SIZE))
    soft = sum(1 for c in coverage if 0 < c < 255)
    check("inpaint: the selection is soft", soft > 100 and 255 in coverage, f"{soft} partly selected pixels")
    _, _, sx1, sy1, sx2, sy2 = Gimp.Selection.bounds(image)
    base_before = pixels(result)
    before = projection(image)
    status, error, n, seed = run("python-fu-sfumato-inpaint", image, result, prompt="a fox", strength=1.0, seed=9)
    check("inpaint: succeeded, 1 layer", (status, n, seed) == (SUCCESS, 1, 9), f"{status} {error} {n} {seed}")
    fox = image.get_layer_by_name("a fox [seed 9]")
    check("inpaint: result layer exists", fox is not None, names(image))
    x, y, w, h = bounds(fox)
    check(
        "inpaint: result layer inside the selection bounds",
        sx1 <= x and sy1 <= y and x + w <= sx2 and y + h <= sy2,
        f"layer {(x, y, w, h)} selection {(sx1, sy1, sx2, sy2)}",
    )
    after = projection(image)
    outside, inside = changed(before, after, coverage, 0), changed(before, after, coverage, 255)
    check("inpaint: 0 pixels changed outside the selection", outside == 0, f"{outside} changed")
    check("inpaint: pixels inside the selection repainted", inside > 0, f"{inside} changed")
    check("inpaint: source layer untouched", pixels(result) == base_before)
    order = names(image)
    check(
        "inpaint: result layer right above its source",
        order.index("a fox [seed 9]") == order.index("a test [seed 7]") - 1,
    )
    check("inpaint: preview layer removed", PREVIEW not in names(image))
    trace()

    # (c) inpaint without a selection: refused in plain words, nothing added
    Gimp.Selection.none(image)
    layers_before = names(image)
    status, error, n, _ = run("python-fu-sfumato-inpaint", image, src, prompt="nothing")
    check(
        "inpaint without a selection is refused with what to do",
        status != SUCCESS and "selection" in error and names(image) == layers_before,
        f"{status} {error!r}",
    )
    check(
        "no stray layers",
        names(image) == ["a fox [seed 9]", "a test [seed 7]", "Paint", "Background"],
        names(image),
    )
    yield

    # (d) a layer smaller than the canvas, off the origin: read at its offsets, transparent around it
    image = new_image(96, 80)
    small = add_layer(image, "Small", 40, 30, pattern(40, 30), offsets=(20, 12))
    status, error, n, _ = run("python-fu-sfumato-restyle", image, small, prompt="offset", seed=3, strength=0.6)
    out = image.get_layer_by_name("offset [seed 3]")
    ok = status == SUCCESS and out is not None
    alpha = pixels(out)[3::4] if ok else b""
    inside_layer = [alpha[yy * 96 + xx] for yy in range(12, 42) for xx in range(20, 60)] if ok else []
    check(
        "offset layer: transparent outside the layer, opaque over it",
        ok and bounds(out) == (0, 0, 96, 80) and alpha.count(0) == 96 * 80 - 40 * 30 and set(inside_layer) == {255},
        f"{status} {error} {bounds(out) if ok else None}",
    )
    yield

    # (e) 16-bit and float images travel in their own precision; grayscale gets grayscale layers
    for label, precision, fmt in (
        ("16-bit", Gimp.Precision.U16_NON_LINEAR, "R'G'B'A u16"),
        ("32-bit float linear", Gimp.Precision.FLOAT_LINEAR, "R'G'B'A float"),
    ):
        image = new_image(64, 64, precision=precision)
        deep = add_layer(image, "Deep", 64, 64, pattern(64, 64))
        src_deep = pixels(deep, fmt)
        status, error, n, _ = run("python-fu-sfumato-restyle", image, deep, prompt=label, seed=5)
        out = image.get_layer_by_name(f"{label} [seed 5]")
        ok = status == SUCCESS and out is not None
        check(
            f"{label}: result layer added, source untouched", ok and pixels(deep, fmt) == src_deep, f"{status} {error}"
        )
        if ok and fmt.endswith("u16"):
            values = pixels(out, fmt)
            words = [int.from_bytes(values[i : i + 2], "little") for i in range(0, len(values), 8)]
            fine = sum(1 for v in words if v % 257)
            check("16-bit: the result carries 16-bit values, not 8-bit ones", fine > len(words) // 2, f"{fine}")
        elif ok:
            check("float: the result differs from the source", pixels(out, fmt) != src_deep)
    image = new_image(48, 48, Gimp.ImageBaseType.GRAY)
    grey = add_layer(image, "Grey", 48, 48, pattern(48, 48), kind=Gimp.ImageType.GRAYA_IMAGE)
    status, error, n, seed = run("python-fu-sfumato-restyle", image, grey, prompt="grey", seed=11, batch=2)
    check(
        "grayscale, batch of 2: two grayscale layers, seeds 11 and 12",
        status == SUCCESS
        and n == 2
        and names(image) == ["grey [seed 11]", "grey [seed 12]", "Grey"]
        and all(layer.is_gray() for layer in image.get_layers()),
        f"{status} {error} {names(image)}",
    )
    yield

    # (g) a style reference from a script: the same restyle with and without the layer 'Look' as its reference
    image = new_image(64, 64)
    stripes = bytes(c for y in range(64) for x in range(64) for c in (x * 13 % 256, y * 5 % 256, 40, 255))
    add_layer(image, "Look", 64, 64, stripes)
    paint = add_layer(image, "Paint", 64, 64, pattern(64, 64))
    status, error, _, _ = run("python-fu-sfumato-restyle", image, paint, prompt="styled", seed=7, strength=0.5)
    plain = image.get_layer_by_name("styled [seed 7]")
    check("reference: the restyle without one succeeded", status == SUCCESS and plain is not None, error)
    plain.set_name("styled without reference")

    def against_plain(label, **extra):
        """The same restyle with ``extra``: did it succeed, and how many pixels differ from the plain one."""
        status, error, n, _ = run(
            "python-fu-sfumato-restyle", image, paint, prompt="styled", seed=7, strength=0.5, **extra
        )
        out = image.get_layer_by_name("styled [seed 7]")
        if status != SUCCESS or n != 1 or out is None:
            return False, f"{status} {error}"
        out.set_name(f"styled with {label}")
        a, b = pixels(out), pixels(plain)
        return True, sum(1 for i in range(0, len(a), 4) if a[i : i + 4] != b[i : i + 4])

    ok, differing = against_plain("reference", reference_layer="Look", reference_weight=1.0, reference_mode="style")
    check("reference: reference-layer changes the restyle", ok and differing > 64 * 64 // 10, differing)
    before = names(image)
    status, error, _, _ = run("python-fu-sfumato-restyle", image, paint, prompt="x", reference_layer="Nope")
    check(
        "reference: a reference layer that does not exist is refused before anything is sent",
        status == CALLING_ERROR and "'Nope'" in error and names(image) == before,
        error,
    )
    # … and a ControlNet control taken from 'Look' (canny edges of its stripes)
    ok, differing = against_plain("control", control_type="canny", control_layer="Look")
    check("control: control-type and control-layer change the restyle", ok and differing > 64 * 64 // 10, differing)
    status, error, _, _ = run(
        "python-fu-sfumato-restyle", image, paint, prompt="x", control_type="depth", control_layer="Nope"
    )
    check(
        "control: a control layer that does not exist is refused", status == CALLING_ERROR and "'Nope'" in error, error
    )
    yield

    # (f) what cannot be sent is refused before anything is
    image = new_image(32, 32, Gimp.ImageBaseType.INDEXED)
    indexed = add_layer(image, "Indexed", 32, 32, kind=Gimp.ImageType.INDEXEDA_IMAGE)
    status, error, _, _ = run("python-fu-sfumato-restyle", image, indexed, prompt="x")
    check("indexed image refused with what to do", status != SUCCESS and "Image > Mode > RGB" in error, error)
    image = new_image(32, 32)
    layer = add_layer(image, "Layer", 32, 32, pattern(32, 32))
    status, error, _, _ = run("python-fu-sfumato-restyle", image, layer, prompt="x", sampler="nope")
    check("unknown sampler refused, naming the choices", status != SUCCESS and "euler_a" in error, error)
    status, error, _, _ = run("python-fu-sfumato-restyle", image, layer, prompt="x", model="no/such-model")
    check(
        "an unknown model: the backend's refusal in plain words, nothing added",
        status != SUCCESS and "no/such-model" in error and names(image) == ["Layer"],
        error,
    )
    proc = Gimp.get_pdb().lookup_procedure("python-fu-sfumato")
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [layer])
    res = proc.run(cfg)
    error = str(res.index(1)) if res.length() > 1 else ""
    check(
        "the window refuses to open from a script, naming the procedures to use",
        int(res.index(0)) != SUCCESS and "python-fu-sfumato-restyle" in error,
        error,
    )


PROCS = ["python-fu-sfumato-restyle", "python-fu-sfumato-inpaint", "python-fu-sfumato"]

try:
    for _ in scenario():
        write()  # a partial result survives a hang in a later step
    write()
except Exception:
    write(traceback.format_exc())
