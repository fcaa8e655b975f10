"""``sfumato upscale IMAGE -o OUT --factor 2``: the picture enlarged ×2 or ×4 and refined in tiles,
written to a new file (an upscale is an export: the input is left as it was)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import numpy as np

from sfumato.protocol import UPSCALE_FACTORS, Cancelled, JobError, Progress, Result
from sfumato.protocol.defaults import DEFAULT_MODEL, DEFAULT_STEPS, UPSCALE_STRENGTH

from .main import EXIT_OK, EXIT_USAGE, CliError, check_output


def add_parser(sub: Any) -> None:
    from pathlib import Path

    u = sub.add_parser("upscale", help="enlarge an image ×2 or ×4 and refine it in tiles (a new file)")
    u.add_argument("input", type=Path, help="input image (PNG, JPEG, ...)")
    u.add_argument("-o", "--output", type=Path, required=True, help="output PNG, the enlarged picture")
    u.add_argument("--factor", type=int, choices=UPSCALE_FACTORS, default=2)
    u.add_argument("--upscaler", help="upscaler catalogue id (`sfumato models`); default: Lanczos")
    u.add_argument("--strength", type=float, default=UPSCALE_STRENGTH, help="refine strength 0..1 (0: no refine)")
    u.add_argument("--tile", type=int, help="refine tile side, px (default: the model's native size)")
    u.add_argument("--prompt", default="")
    u.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    u.add_argument("--seed", type=int, default=None)
    u.add_argument("--model", default=DEFAULT_MODEL)
    u.add_argument("--server", help="ws://HOST:PORT of a running backend (default: an embedded one)")
    u.add_argument("--token", help="the backend's token")
    u.add_argument("--quiet", action="store_true", help="no progress bar")


async def run_upscale(args: argparse.Namespace) -> int:
    from sfumato.plugin.core.requests import GenerationParams, new_job_id
    from sfumato.plugin.core.upscale import build_upscale
    from sfumato.protocol import InvalidMessage
    from sfumato.protocol.limits import HARD_MAX_PIXELS

    from .document import ImageDocument, load_rgba, save_rgba
    from .main import _connected, _embedded_backend, _embedded_config, _read_image, finished

    check_output(args.output)
    cfg = None if args.server else _embedded_config()
    limit = HARD_MAX_PIXELS if cfg is None else cfg.max_pixels
    rgba = _read_image("input image", args.input, limit, "the largest image the backend accepts", load_rgba)
    params = GenerationParams(model=args.model, prompt=args.prompt, steps=args.steps, seed=args.seed)
    try:
        req = build_upscale(
            ImageDocument(rgba, name=args.input.name),
            params,
            args.factor,
            args.upscaler,
            args.strength,
            new_job_id("cli"),
            args.tile,
        )
    except InvalidMessage as exc:
        raise CliError(f"invalid request: {exc}", EXIT_USAGE) from None
    outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def listener(event: Any, job: Any) -> None:
        if isinstance(event, Progress) and not args.quiet and event.total:
            filled = round(30 * event.step / event.total)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] step {event.step}/{event.total}"
            print(f"\r{bar}", end="", file=sys.stderr, flush=True)
        if isinstance(event, (Result, JobError, Cancelled)) and not outcome.done():
            outcome.set_result(event)

    async with contextlib.AsyncExitStack() as stack:
        url = args.server or await stack.enter_async_context(_embedded_backend(cfg))
        client, failed = await stack.enter_async_context(_connected(url, args.token, listener))
        assert client.welcome is not None
        out = req.output_rect
        if out.w * out.h > client.welcome.limits.max_pixels:  # the backend would refuse it; say so plainly
            raise CliError(
                f"the result would be {out.w}×{out.h}, more than the backend's max_pixels "
                f"({client.welcome.limits.max_pixels}); use --factor 2 or a smaller image",
                EXIT_USAGE,
            )
        await client.submit(req)
        await asyncio.wait([outcome, failed], return_when=asyncio.FIRST_COMPLETED)
    if not args.quiet:
        print(file=sys.stderr)
    event = finished(outcome, failed)
    image = event.images[0]
    save_rgba(args.output, np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 4))
    print(f"wrote {args.output} ({image.width}×{image.height}; {event.timings.get('total', 0):.2f} s)")
    return EXIT_OK
