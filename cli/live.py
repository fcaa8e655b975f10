"""``sfumato live IMAGE -o OUT``: live painting from the command line. The image file is watched; each
change (once the file has been quiet for the debounce) sends a live job that supersedes the previous
one, and the newest result is written to OUT (the input with the result applied). Runs until Ctrl+C
or SIGTERM, then says how many jobs were sent, superseded and finished.

The same plugin.core live painting as the Krita docker: the file is the document, OUT is its preview.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sfumato.protocol import Image, Rect
from sfumato.protocol.defaults import DEFAULT_MODEL, DEFAULT_STRENGTH

from .document import ImageDocument, composite, load_rgba, save_rgba
from .main import EXIT_CONNECTION, EXIT_OK, EXIT_USAGE, CliError, check_output

POLL_S = 0.05  # how often the file is looked at (its size and modification time only)


def add_parser(sub: Any) -> None:
    from sfumato.plugin.core.live import DEBOUNCE_S

    v = sub.add_parser("live", help="watch an image file and repaint it live on every change (Ctrl+C ends)")
    v.add_argument("input", type=Path, help="the image file being painted (PNG, JPEG, ...)")
    v.add_argument("-o", "--output", type=Path, required=True, help="output PNG, rewritten with each newest result")
    v.add_argument("--strength", type=float, default=DEFAULT_STRENGTH, help="denoising strength 0..1")
    v.add_argument("--debounce", type=float, default=DEBOUNCE_S, help="seconds the file must stay unchanged")
    v.add_argument("--prompt", default="")
    v.add_argument("--negative", default="")
    v.add_argument("--seed", type=int, default=None, help="a fixed seed: the same canvas gives the same picture")
    v.add_argument("--model", default=DEFAULT_MODEL)
    v.add_argument("--server", help="ws://HOST:PORT of a running backend (default: an embedded one)")
    v.add_argument("--token", help="the backend's token")


class WatchedImage(ImageDocument):
    """The input file as a document; its live preview is the output file."""

    def __init__(self, path: Path, output: Path, max_pixels: int) -> None:
        super().__init__(np.zeros((1, 1, 4), np.uint8), name=path.name)
        self.path, self.output, self.max_pixels = path, output, max_pixels
        self.stamp: tuple[float, int] | None = None

    def changed(self) -> bool:
        """Whether the file differs (size or modification time) from when it was last looked at."""
        try:
            st = self.path.stat()
        except OSError:
            return False  # being replaced: looked at again on the next poll
        stamp = (st.st_mtime, st.st_size)
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        return True

    def reload(self) -> bool:
        """Read the file as it is now; False when it cannot be read yet (half written)."""
        from .main import _read_image

        try:
            self.pixels = _read_image("input image", self.path, self.max_pixels, "the backend's limit", load_rgba)
        except CliError as exc:
            print(f"sfumato live: {exc}; waiting for the next change", file=sys.stderr)
            return False
        return True

    def show_preview(self, image: Image, rect: Rect) -> None:
        if image.width == rect.w and image.height == rect.h and rect.right <= self.pixels.shape[1]:
            save_rgba(self.output, composite(self.pixels, image, rect))


async def run_live(args: argparse.Namespace) -> int:
    from sfumato.plugin.core.controller import Controller
    from sfumato.plugin.core.live import LivePainting
    from sfumato.plugin.core.requests import GenerationParams
    from sfumato.protocol import Cancelled, Result
    from sfumato.protocol.limits import HARD_MAX_PIXELS

    from .main import _connected, _embedded_backend, _embedded_config

    check_output(args.output)
    if not args.input.is_file():
        raise CliError(f"cannot read input image {args.input}: no such file", EXIT_USAGE)
    cfg = None if args.server else _embedded_config()
    doc = WatchedImage(args.input, args.output, HARD_MAX_PIXELS if cfg is None else cfg.max_pixels)
    params = GenerationParams(
        model=args.model, prompt=args.prompt, negative_prompt=args.negative, strength=args.strength, seed=args.seed
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    handlers: list[Any] = []

    def report(event: Any, job: Any) -> None:
        if isinstance(event, Result) and job is not None and job.submit.live:
            print(f"wrote {args.output} (job {event.job_id}, seed {event.seeds[0]})", flush=True)
        elif isinstance(event, Cancelled) and event.superseded_by:
            print(f"superseded {event.job_id} by {event.superseded_by}", flush=True)

    async with contextlib.AsyncExitStack() as stack:
        url = args.server or await stack.enter_async_context(_embedded_backend(cfg))
        client, failed = await stack.enter_async_context(
            _connected(url, args.token, lambda event, job: [h(event, job) for h in handlers])
        )
        assert client.welcome is not None
        doc.max_pixels = min(doc.max_pixels, client.welcome.limits.max_pixels)
        controller = Controller(client, lambda coro: asyncio.ensure_future(coro), job_prefix="cli")
        live = LivePainting(controller, doc, lambda: params, args.debounce)
        handlers += [controller.handle, report]
        print(f"watching {args.input} (Ctrl+C ends)", flush=True)
        while not stop.is_set() and not failed.done():
            now = time.monotonic()
            if doc.changed():
                live.changed(now)
            if live.debounce.due_at is not None and now >= live.debounce.due_at and doc.reload():
                submit = live.tick(now)
                if submit is not None:
                    print(f"sent {submit.job_id}", flush=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)
        live.stop()
        lost = failed.result() if failed.done() else None  # before our own close says "disconnected"
    c = live.counts
    print(
        f"live: {c.submitted} sent, {c.superseded} superseded, {c.stopped} stopped at a change, {c.finished} finished"
    )
    if lost is not None:
        raise CliError(f"lost the backend: {lost}", EXIT_CONNECTION)
    return EXIT_OK
