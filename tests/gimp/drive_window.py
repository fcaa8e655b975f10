"""Runs Filters ▸ Sfumato ▸ Restyle Layer… with its dialog, then opens the Sfumato window (GUI GIMP under Xvfb).

With SFUMATO_GIMP_TEST_HOOK set, the plug-in presses the dialog's OK itself, and the hook
(window_selftest.py) checks what the menu entry did, drives the window and closes it; the last call
below returns then.
"""

import os
import sys

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

SIZE = 128
image = Gimp.Image.new(SIZE, SIZE, Gimp.ImageBaseType.RGB)
for name, data in (
    ("Background", bytes((255, 255, 255, 255)) * SIZE * SIZE),
    ("Paint", bytes(v for y in range(SIZE) for x in range(SIZE) for v in ((x * 2) % 256, (y * 2) % 256, 90, 255))),
):
    layer = Gimp.Layer.new(image, name, SIZE, SIZE, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, SIZE, SIZE), "R'G'B'A u8", data)
    buf.flush()
Gimp.Display.new(image)


def interactive(name, **args):
    proc = Gimp.get_pdb().lookup_procedure(name)
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [layer])
    for key, value in args.items():
        cfg.set_property(key, value)
    return proc.run(cfg)


server = os.environ["SFUMATO_GIMP_TEST_SERVER"]
menu_args = {"server-url": server, "prompt": "from the menu", "seed": 3, "steps": 8}
menu = interactive("python-fu-sfumato-restyle", **menu_args)
if int(menu.index(0)) != int(Gimp.PDBStatusType.SUCCESS):  # the scenario's check fails then: say why here
    print(f"the menu's restyle failed: {menu.index(1) if menu.length() > 1 else menu.index(0)}", file=sys.stderr)
image.set_selected_layers([layer])
interactive("python-fu-sfumato")
