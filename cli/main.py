"""The ``sfumato`` command: ``serve``, ``img2img``, ``expand``, ``upscale`` (cli/upscale.py), ``live``
(cli/live.py) and ``models``.

``img2img`` and ``expand`` are a headless editor built on plugin.core (the same client code as the Krita plugin).
Without ``--server`` it starts an embedded backend in this process and talks to it over loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from sfumato.plugin.core.expand import Margins
    from sfumato.plugin.core.references import ReferenceSpec
    from sfumato.plugin.core.requests import ControlSpec

    from .document import ImageDocument

from sfumato.plugin.core.models import size_text
from sfumato.protocol import MODEL_KINDS, LoraWeight, ModelInfo
from sfumato.protocol.defaults import (
    DEFAULT_GUIDANCE,
    DEFAULT_MODEL,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    INPAINT_STRENGTH,
    SCHEDULERS,
)

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_CONNECTION = 0, 1, 2, 3

_T = TypeVar("_T")


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_JOB_FAILED) -> None:
        super().__init__(message)
        self.code = code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        from sfumato.backend.main import serve_main

        return serve_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "models":
            return run_models(args)
        if args.command == "upscale":
            from .upscale import run_upscale

            return asyncio.run(run_upscale(args))
        if args.command == "live":
            from .live import run_live

            return asyncio.run(run_live(args))
        return asyncio.run(run_img2img(args))
    except CliError as exc:
        print(f"sfumato: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("\nsfumato: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sfumato", description="Sfumato: AI painting assistant (backend and CLI).")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the backend (see `sfumato serve --help`)", add_help=False)
    g = sub.add_parser("img2img", help="restyle an image, or repaint the masked part of it")
    g.add_argument("input", type=Path, help="input image (PNG, JPEG, ...)")
    g.add_argument("-o", "--output", type=Path, required=True, help="output PNG: the input with the result applied")
    g.add_argument("--mask", type=Path, help="selection mask (grey or alpha, same size): inpaint what is white")
    g.add_argument(
        "--control",
        action="append",
        default=[],
        metavar="TYPE[=IMAGE]",
        help="ControlNet control: TYPE alone extracts it from the input (canny); TYPE=IMAGE uses a ready map",
    )
    g.add_argument("--control-strength", type=float, default=1.0)
    _reference_args(g)
    g.add_argument(
        "--strength",
        type=float,
        default=None,
        help=f"denoising strength 0..1 ({DEFAULT_STRENGTH}; {INPAINT_STRENGTH} with --mask)",
    )
    _generation_args(g)
    e = sub.add_parser("expand", help="grow the canvas and fill the new border so it continues the picture")
    e.add_argument("input", type=Path, help="input image (PNG, JPEG, ...)")
    e.add_argument("-o", "--output", type=Path, required=True, help="output PNG: the grown picture")
    e.add_argument("--margin", type=int, required=True, help="pixels added on each chosen side")
    e.add_argument("--sides", default="left,right,top,bottom", help="comma-separated: left, right, top, bottom")
    e.add_argument("--strength", type=float, default=INPAINT_STRENGTH, help="denoising strength 0..1")
    e.set_defaults(mask=None, control=[], control_strength=1.0, reference=[], adapter=None)  # what img2img reads
    _generation_args(e)
    from .upscale import add_parser as add_upscale

    add_upscale(sub)
    from .live import add_parser as add_live

    add_live(sub)
    m = sub.add_parser("models", help="list the model catalogue (usable and unusable, with reasons)")
    m.add_argument("--models", dest="model_dirs", action="append", type=Path, metavar="DIR")
    m.add_argument("--server", help="list what a running backend offers instead")
    m.add_argument("--token")
    return p


def _lora(text: str) -> LoraWeight:
    """``ID[:WEIGHT]``: a LoRA of the request (the weight is what follows the last colon, when it is a number)."""
    lora_id, _, weight = text.rpartition(":")
    try:
        return LoraWeight(id=lora_id, weight=float(weight)) if lora_id else LoraWeight(id=text)
    except ValueError:
        return LoraWeight(id=text)  # a colon inside the id, no weight


def _reference_args(g: argparse.ArgumentParser) -> None:
    from sfumato.protocol import DEFAULT_REFERENCE_MODE, REFERENCE_MODES

    g.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="FILE[:WEIGHT[:MODE]]",
        help=f"a reference image (IP-Adapter), repeatable: WEIGHT 0..2 (1), MODE {'/'.join(REFERENCE_MODES)} "
        f"({DEFAULT_REFERENCE_MODE})",
    )
    g.add_argument("--adapter", metavar="ID", help="the IP-Adapter for every --reference (default: the backend picks)")


def parse_reference(spec: str) -> tuple[Path, float, str]:
    """``FILE[:WEIGHT[:MODE]]`` → (file, weight, mode); a file name may hold colons itself."""
    from sfumato.protocol import DEFAULT_REFERENCE_MODE, REFERENCE_MODES

    path, weight, mode = spec, 1.0, DEFAULT_REFERENCE_MODE
    head, _, tail = path.rpartition(":")
    if head and tail in REFERENCE_MODES:
        path, mode = head, tail
        head, _, tail = path.rpartition(":")
    if head:
        try:
            weight = float(tail)
            path = head
        except ValueError:
            pass
    return Path(path), weight, mode


def _generation_args(g: argparse.ArgumentParser) -> None:
    g.add_argument("--prompt", default="")
    g.add_argument("--negative", default="")
    g.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    g.add_argument("--cfg", type=float, default=DEFAULT_GUIDANCE, help="guidance scale")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--scheduler", default=DEFAULT_SCHEDULER, choices=SCHEDULERS)
    g.add_argument("--batch", type=int, default=1, help="images to generate (OUTPUT-1.png, OUTPUT-2.png, ...)")
    g.add_argument("--model", default=DEFAULT_MODEL)
    g.add_argument(
        "--lora",
        action="append",
        default=[],
        type=_lora,
        metavar="ID[:WEIGHT]",
        help="a LoRA by catalogue id (`sfumato models`), weight 1 unless given; <lora:NAME:W> in --prompt works too",
    )
    g.add_argument("--vae", help="a VAE by catalogue id (`sfumato models`); default: the model's own")
    g.add_argument("--server", help="ws://HOST:PORT of a running backend (default: an embedded one)")
    g.add_argument("--token", help="the backend's token")
    g.add_argument("--layer-only", action="store_true", help="write the result layer alone (transparent elsewhere)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------------- models


def run_models(args: argparse.Namespace) -> int:
    if args.server:
        return asyncio.run(_remote_models(args))
    from sfumato.backend.config import ConfigError, load_config
    from sfumato.backend.models.catalogue import Catalogue

    try:
        cfg = load_config(model_dirs=args.model_dirs)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    entries = Catalogue.scan(cfg.model_dirs, cfg.cache_dir, builtin=cfg.builtin_models).all()
    print(f"model folders: {', '.join(str(d) for d in cfg.model_dirs) or '(none; add with --models DIR)'}")
    _print_models([e.info() for e in entries if e.kind in MODEL_KINDS])
    return EXIT_OK


def _print_models(models: list[ModelInfo]) -> None:
    """Per entry: id, kind, architecture, size on disk; unusable ones after, with why."""
    for m in models:
        if not m.problem:
            extra = f"  control={m.control_type}" if m.control_type else ""
            test = "  [test model]" if m.test else ""
            print(f"  {m.id:40s} {m.kind:10s} {m.arch:12s} {size_text(m.size_bytes):>9s}{extra}{test}")
    unusable = [m for m in models if m.problem]
    if unusable:
        print("unusable:")
        for m in unusable:
            print(f"  {m.id:40s} {m.kind:10s} {m.arch:12s} {size_text(m.size_bytes):>9s}  {m.problem}")


async def _remote_models(args: argparse.Namespace) -> int:
    async with _connected(args.server, args.token, None) as (client, _):
        assert client.welcome is not None
        _print_models(list(client.welcome.models))
    return EXIT_OK


# ---------------------------------------------------------------------------- img2img


def _embedded_config() -> Any:
    from sfumato.backend.config import ConfigError, load_config

    try:
        return load_config(host="127.0.0.1", port=0)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


@contextlib.asynccontextmanager
async def _embedded_backend(cfg: Any) -> AsyncIterator[str]:
    from sfumato.backend.main import build_engines
    from sfumato.backend.server.app import Server

    server = Server(cfg, await asyncio.to_thread(build_engines, cfg))
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop(grace_s=2)


@contextlib.asynccontextmanager
async def _connected(url: str, token: str | None, listener: Any) -> AsyncIterator[tuple[Any, Any]]:
    from sfumato.plugin.core.client import Client, ConnectionChanged
    from sfumato.plugin.core.transport import WebSocketTransport

    failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_event(event: Any, job: Any) -> None:
        if isinstance(event, ConnectionChanged) and event.state in ("failed", "disconnected") and not failed.done():
            failed.set_result(event.detail)
        if listener is not None:
            listener(event, job)

    client = Client(lambda: WebSocketTransport.connect(url), "sfumato-cli/0.1", "cli", token, on_event)
    task = asyncio.create_task(client.run())
    waiter = asyncio.create_task(client.wait_connected())
    pending: list[asyncio.Future[Any]] = [waiter, failed]
    done, _ = await asyncio.wait(pending, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        await client.close()
        reason = failed.result() if failed.done() else "timed out"
        raise CliError(f"cannot reach the backend at {url}: {reason}", EXIT_CONNECTION)
    try:
        yield client, failed
    finally:
        await client.close()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 5)


def finished(outcome: asyncio.Future[Any], failed: asyncio.Future[Any]) -> Any:
    """The job's ``Result``, or the CliError that says why there is none (lost backend, job error, cancel)."""
    from sfumato.protocol import Cancelled, JobError, Result

    if not outcome.done():
        raise CliError(f"lost the backend: {failed.result()}", EXIT_CONNECTION)
    event = outcome.result()
    if isinstance(event, JobError):
        raise CliError(f"{event.message}" + (f" ({event.field})" if event.field else ""))
    if isinstance(event, Cancelled):
        raise CliError("the job was cancelled")
    assert isinstance(event, Result)
    return event


def check_output(path: Path) -> None:
    """Refuse an output that cannot be written before any job runs (batch outputs share its folder)."""
    folder = path.parent
    if path.is_dir():
        raise CliError(f"the output {path} is a folder; name a file in it, e.g. {path / 'out.png'}", EXIT_USAGE)
    if not folder.exists():
        raise CliError(f"the output folder {folder} does not exist", EXIT_USAGE)
    if not folder.is_dir():
        raise CliError(f"the output folder {folder} is not a folder", EXIT_USAGE)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"the output folder {folder} is not writable", EXIT_USAGE)


def _read_image(what: str, path: Path, limit: int, why: str, read: Callable[[Path, int], _T]) -> _T:
    """``read(path, limit)``, with every way an image file can be refused turned into a one-line CliError."""
    from PIL.Image import DecompressionBombError, DecompressionBombWarning

    from .document import ImageTooLarge

    try:
        return read(path, limit)
    except ImageTooLarge as exc:
        raise CliError(f"{what} {path} is {exc} ({why})", EXIT_USAGE) from None
    except (DecompressionBombError, DecompressionBombWarning) as exc:
        raise CliError(f"{what} {path} is too large to open: {exc}", EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc}", EXIT_USAGE) from None


@dataclass(frozen=True)
class ImageFiles:
    """The input, mask and ready control maps of an ``img2img`` run.

    Every image is sized from its file's header, and refused when it has more pixels than the backend
    accepts, before anything is decoded. Without a mask the whole image is sent, so the limit is the
    backend's ``max_pixels``; with a mask only the context around it is sent (the backend checks that), and
    the canvas, held whole in memory, may be as large as the protocol's HARD_MAX_PIXELS.
    """

    input: Path
    mask: Path | None
    controls: tuple[tuple[str, Path | None], ...]  # (type, ready map or None to extract it from the input)
    references: tuple[tuple[Path, float, str], ...] = ()  # (file, weight, mode); any size

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ImageFiles:
        controls = []
        for spec in args.control:
            kind, _, path = spec.partition("=")
            controls.append((kind, Path(path) if path else None))
        return cls(args.input, args.mask, tuple(controls), tuple(parse_reference(r) for r in args.reference))

    def limit(self, max_pixels: int, backend: str) -> tuple[int, str]:
        """Pixels allowed per image file, and why, for ``backend`` accepting ``max_pixels`` per image."""
        from sfumato.protocol.limits import HARD_MAX_PIXELS

        if self.mask is None:
            return max_pixels, f"the largest image {backend} accepts"
        return max(max_pixels, HARD_MAX_PIXELS), "the largest canvas the CLI inpaints"

    def check(self, max_pixels: int, backend: str) -> None:
        """Read only the headers: refuse an unreadable, huge or mis-sized file before any is decoded."""
        from .document import image_size

        limit, why = self.limit(max_pixels, backend)
        w, h = _read_image("input image", self.input, limit, why, image_size)
        if self.mask is not None:
            mw, mh = _read_image("mask", self.mask, limit, why, image_size)
            if (mw, mh) != (w, h):
                raise CliError(f"the mask is {mw}×{mh} but the input is {w}×{h}", EXIT_USAGE)
        for _kind, path in self.controls:
            if path is not None and _read_image("control image", path, limit, why, image_size) != (w, h):
                raise CliError(f"control image {path} must be the size of the input", EXIT_USAGE)
        for path, _weight, _mode in self.references:
            _read_image("reference image", path, limit, why, image_size)

    def control_specs(self, strength: float) -> tuple[ControlSpec, ...]:
        from sfumato.plugin.core.requests import ControlSpec

        return tuple(
            ControlSpec(type=kind, layer=f"control{i}" if path else None, preprocess=not path, strength=strength)
            for i, (kind, path) in enumerate(self.controls)
        )

    def reference_specs(self, adapter: str | None) -> tuple[ReferenceSpec, ...]:
        from sfumato.plugin.core.references import ReferenceSpec

        return tuple(
            ReferenceSpec(layer=f"reference{i}", weight=weight, mode=mode, adapter=adapter)
            for i, (_path, weight, mode) in enumerate(self.references)
        )

    def load(self, max_pixels: int, backend: str) -> ImageDocument:
        """Check every header, then decode the files into a document (control maps as its layers)."""
        from .document import ImageDocument, load_gray, load_rgba

        self.check(max_pixels, backend)
        limit, why = self.limit(max_pixels, backend)
        pixels = _read_image("input image", self.input, limit, why, load_rgba)
        mask = _read_image("mask", self.mask, limit, why, load_gray) if self.mask is not None else None
        layers = {
            f"control{i}": _read_image("control image", path, limit, why, load_rgba)
            for i, (_kind, path) in enumerate(self.controls)
            if path is not None
        }
        references = {
            f"reference{i}": _read_image("reference image", path, limit, why, load_rgba)
            for i, (path, _weight, _mode) in enumerate(self.references)
        }
        return ImageDocument(pixels, mask, layers, self.input.name, references)


def _margins(args: argparse.Namespace) -> Margins:
    from sfumato.plugin.core.expand import Margins

    try:
        margins = Margins.on([side.strip() for side in args.sides.split(",") if side.strip()], args.margin)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if margins.empty:
        raise CliError("--margin and --sides add no canvas: give a margin above 0 and at least one side", EXIT_USAGE)
    return margins


async def run_img2img(args: argparse.Namespace) -> int:
    from sfumato.plugin.core.controller import Controller
    from sfumato.plugin.core.requests import GenerationParams, unique_loras
    from sfumato.protocol import Cancelled, InvalidMessage, JobError, Progress, Result
    from sfumato.protocol.limits import HARD_MAX_PIXELS

    from .document import composite, layer_canvas, save_rgba

    # Everything that can be refused locally is, before a backend starts or is reached.
    check_output(args.output)
    margins = _margins(args) if args.command == "expand" else None
    files = ImageFiles.from_args(args)
    cfg: Any = None
    doc: ImageDocument | None = None
    if args.server:
        files.check(HARD_MAX_PIXELS, "any backend")  # the server's own limit is known once connected
    else:
        cfg = _embedded_config()
        doc = files.load(cfg.max_pixels, "the backend")
    strength = args.strength if args.strength is not None else (INPAINT_STRENGTH if args.mask else DEFAULT_STRENGTH)
    try:
        params = GenerationParams(
            model=args.model,
            prompt=args.prompt,
            negative_prompt=args.negative,
            strength=strength,
            steps=args.steps,
            guidance=args.cfg,
            seed=args.seed,
            scheduler=args.scheduler,
            batch_size=args.batch,
            controls=files.control_specs(args.control_strength),
            loras=unique_loras(args.lora),
            vae=args.vae,
            references=files.reference_specs(args.adapter),
        )
        outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def listener(event: Any, job: Any) -> None:
            if isinstance(event, Progress) and not args.quiet and event.total:
                filled = round(30 * event.step / event.total)
                print(
                    f"\r[{'#' * filled}{'.' * (30 - filled)}] step {event.step}/{event.total}",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
            if isinstance(event, (Result, JobError, Cancelled)) and not outcome.done():
                outcome.set_result(event)

        async with contextlib.AsyncExitStack() as stack:
            url = args.server or await stack.enter_async_context(_embedded_backend(cfg))
            handlers: list[Any] = []
            client, failed = await stack.enter_async_context(
                _connected(url, args.token, lambda event, job: [h(event, job) for h in handlers])
            )
            if doc is None:
                assert client.welcome is not None
                doc = files.load(client.welcome.limits.max_pixels, f"the backend at {url}")
            controller = Controller(client, lambda coro: asyncio.ensure_future(coro), job_prefix="cli")
            handlers += [controller.handle, listener]
            if margins is None:
                controller.generate(doc, params)
            else:
                controller.expand(doc, params, margins)
            either: list[asyncio.Future[Any]] = [outcome, failed]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    except InvalidMessage as exc:
        raise CliError(f"invalid request: {exc}", EXIT_USAGE) from None
    if not args.quiet:
        print(file=sys.stderr)
    event = finished(outcome, failed)
    pixels = doc.pixels
    outputs = []
    for i, (image, rect, _name) in enumerate(doc.results):
        out = (
            layer_canvas((pixels.shape[1], pixels.shape[0]), image, rect)
            if args.layer_only
            else composite(pixels, image, rect)
        )
        path = (
            args.output
            if len(doc.results) == 1
            else args.output.with_name(f"{args.output.stem}-{i + 1}{args.output.suffix}")
        )
        save_rgba(path, out)
        outputs.append(str(path))
    seeds = ", ".join(str(s) for s in event.seeds)
    print(f"wrote {', '.join(outputs)} (seed {seeds}; {event.timings.get('total', 0):.2f} s)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
