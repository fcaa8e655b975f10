"""The A1111 routes and their answers, in the shapes of A1111's API and of its ControlNet extension.

Handlers run on the backend's event loop and never block it: JSON bodies over a few KiB, images,
PNG encoding and result frames are handled on the API's image threads.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from aiohttp import web

from sfumato.protocol import (
    Cancelled,
    DecodeLimits,
    Encoded,
    ErrorCode,
    JobError,
    ModelInfo,
    Progress,
    Result,
    decode,
    decode_encoded,
)
from sfumato.protocol.limits import HARD_MAX_PIXELS

from ..config import Config
from ..server.hub import Hub
from . import access, generation, images
from .clients import Clients, HttpClient, Refused
from .fields import IMG2IMG, MODULE_LIST, SAMPLERS, SCHEDULES, TXT2IMG, FieldError, find_model, parse

T = TypeVar("T")

INLINE_JSON_BYTES = 64 << 10  # larger bodies are parsed on an image thread
# a job's refusal or failure → the HTTP status that says it
STATUS = {
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.QUEUE_FULL: 429,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.OUT_OF_MEMORY: 500,
    ErrorCode.INTERNAL: 500,
}
_requests = itertools.count(1)


class Routes:
    def __init__(self, config: Config, hub: Hub, clients: Clients, pool: Executor) -> None:
        self.config, self.hub, self.clients, self.pool = config, hub, clients, pool

    def add_to(
        self, app: web.Application, expect: Callable[[web.Request], Awaitable[web.StreamResponse | None]]
    ) -> None:
        get = app.router.add_get

        def post(path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
            app.router.add_post(path, handler, expect_handler=expect)

        post("/sdapi/v1/txt2img", self.txt2img)
        post("/sdapi/v1/img2img", self.img2img)
        get("/sdapi/v1/progress", self.progress)
        post("/sdapi/v1/interrupt", self.interrupt)
        get("/sdapi/v1/sd-models", self.sd_models)
        get("/sdapi/v1/samplers", self.samplers)
        get("/sdapi/v1/schedulers", self.schedulers)
        get("/sdapi/v1/options", self.get_options)
        post("/sdapi/v1/options", self.set_options)
        get("/controlnet/model_list", self.controlnet_models)
        get("/controlnet/module_list", self.controlnet_modules)
        get("/controlnet/version", self.controlnet_version)
        get("/sdapi/v1/loras", self.loras)
        get("/sdapi/v1/embeddings", self.embeddings)
        # what the routes here cannot use (a VAE is not chosen through options here; no hires fix or extras)
        for path in ("sd-vae", "prompt-styles", "hypernetworks", "upscalers"):
            get(f"/sdapi/v1/{path}", self.empty_list)

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def client(self, request: web.Request) -> HttpClient:
        client = self.clients.get(access.identity(request))
        if client is None:
            raise web.HTTPServiceUnavailable(
                text='{"detail": "Too many clients are busy."}', content_type="application/json"
            )
        return client

    # ------------------------------------------------------------------ generation

    async def txt2img(self, request: web.Request) -> web.Response:
        return await self._generate(request, "txt2img")

    async def img2img(self, request: web.Request) -> web.Response:
        return await self._generate(request, "img2img")

    async def _generate(self, request: web.Request, task: str) -> web.Response:
        client = self.client(request)
        c = self.config
        async with client.body_slot:  # bounds what one client's bodies and decoded images hold at once
            body = await self._json(request)
            params, echo = parse(body, TXT2IMG if task == "txt2img" else IMG2IMG, c.max_batch, c.max_queued_per_editor)
            del body
            models = self.hub.engine.models()
            model = self._checkpoint(models, params.override_settings, client)
            controlnets = [m for m in models if m.kind == "controlnet"]
            adapters = tuple(m for m in models if m.kind == "ipadapter")
            prefix = f"a1111-{next(_requests)}"
            plan = await self._off_loop(
                generation.plan, task, params, model, controlnets, prefix, c.max_pixels, c.max_controls, adapters
            )
        try:
            run = client.start(self.hub, plan.submits)
        except Refused as exc:
            return _job_error(exc.refusal)
        plan.submits = []  # the queued jobs hold the inputs now (and drop them when they finish)
        run.timestamp = plan.timestamp
        try:
            await client.wait(run)
            outcomes = [w.outcome.result() for w in run.watches]
            failure = next((o for o in outcomes if isinstance(o, JobError)), None)
            if failure is not None:
                return _job_error(failure)
            if self.hub.closing:
                return web.json_response({"detail": "The server is shutting down."}, status=503)
            assert client.editor is not None
            results = [  # each encoded once by the worker (protocol.Encoded)
                self.hub.result_frame(client.editor, w.job_id) for w, o in zip(run.watches, outcomes) if o is None
            ]
            interrupted = any(isinstance(o, Cancelled) for o in outcomes)
            body = await self._off_loop(_answer, plan, [r for r in results if r is not None], echo, interrupted)
            return web.Response(body=body, content_type="application/json")
        finally:
            client.end(self.hub, run)

    async def _json(self, request: web.Request) -> Any:
        data = await request.read()  # aiohttp stops at client_max_size (413) when no Content-Length said so first
        try:
            if len(data) <= INLINE_JSON_BYTES:
                return json.loads(data)
            return await self._off_loop(json.loads, data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FieldError((), f"the body is not JSON: {exc}") from None

    def _checkpoint(self, models: list[ModelInfo], overrides: dict[str, Any] | None, client: HttpClient) -> ModelInfo:
        """``override_settings.sd_model_checkpoint``, else the client's choice, else the server's default."""
        name = (overrides or {}).get("sd_model_checkpoint")
        if isinstance(name, str):
            found = find_model(name, models, "checkpoint")
            if found is None:
                raise FieldError(("override_settings", "sd_model_checkpoint"), _unknown_checkpoint(name, models))
            return found
        if client.model is not None:
            chosen = next((m for m in models if m.id == client.model), None)
            if chosen is not None:
                return chosen
        return _default_checkpoint(models)

    # ------------------------------------------------------------------ progress and interrupt

    async def progress(self, request: web.Request) -> web.Response:
        client = self.client(request)
        skip_image = request.query.get("skip_current_image", "false").strip().lower() in ("true", "1", "yes")
        run = client.generations[-1] if client.generations else None
        state: dict[str, Any] = {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": "",
            "job_count": 0,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        }
        if run is None:
            return web.json_response(
                {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
            )
        done = sum(1 for w in run.watches if w.outcome.done())
        current = next((w for w in run.watches if not w.outcome.done()), None)
        step = total = 0
        image = None
        textinfo = None
        if current is not None:
            frame = current.progress
            if frame is not None:
                small = len(frame) <= current.previewless_bytes  # a few dozen bytes; a preview is decoded off the loop
                latest = decode(frame) if small else await self._off_loop(decode, frame)
                if isinstance(latest, Progress):
                    step, total = latest.step, latest.total
            if current.position >= 0:
                textinfo = f"Waiting in the queue: {current.position} job(s) ahead"
            if current.preview is not None and not skip_image:
                if current.preview_png is None or current.preview_png[0] is not current.preview:  # encoded once
                    current.preview_png = (current.preview, await self._off_loop(_preview_png, current.preview))
                image = current.preview_png[1]
        progress = min(1.0, (done + (step / total if total else 0.0)) / len(run.watches))
        elapsed = time.monotonic() - run.started_at
        state.update(
            interrupted=run.interrupted,
            job=current.job_id if current is not None else "",
            job_count=len(run.watches),
            job_timestamp=run.timestamp,
            job_no=min(done, len(run.watches) - 1),
            sampling_step=step,
            sampling_steps=total,
        )
        return web.json_response(
            {
                "progress": progress,
                "eta_relative": elapsed / progress - elapsed if progress > 0 else 0.0,
                "state": state,
                "current_image": image,
                "textinfo": textinfo,
            }
        )

    async def interrupt(self, request: web.Request) -> web.Response:
        """Stops this client's jobs only: queued ones at once, the running one within a denoising step."""
        self.client(request).interrupt(self.hub)
        return web.json_response({})

    # ------------------------------------------------------------------ models and options

    async def sd_models(self, request: web.Request) -> web.Response:
        checkpoints = [m for m in self.hub.engine.models() if m.kind == "checkpoint"]
        return web.json_response(
            [
                {
                    "title": m.id,
                    "model_name": m.id.rsplit("/", 1)[-1],
                    "hash": None,
                    "sha256": None,
                    "filename": m.id,  # a catalogue id: no file path leaves the server
                    "config": None,
                }
                for m in checkpoints
            ]
        )

    async def samplers(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {"name": name, "aliases": list(aliases), "options": {"scheduler": "karras"} if "karras" in by else {}}
                for name, (aliases, by) in SAMPLERS.items()
            ]
        )

    async def schedulers(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "name": name,
                    "label": label,
                    "aliases": None,
                    "default_rho": 7.0 if name == "karras" else -1.0,
                    "need_inner_model": False,
                }
                for name, label in SCHEDULES.items()
            ]
        )

    async def get_options(self, request: web.Request) -> web.Response:
        client = self.client(request)
        model = self._checkpoint(self.hub.engine.models(), None, client)
        return web.json_response(
            {
                "sd_model_checkpoint": model.id,
                "sd_checkpoint_hash": None,
                "sd_vae": "Automatic",
                "CLIP_stop_at_last_layers": 1,
                "samples_format": "png",
                "return_grid": False,  # a batch answers its images only, never a grid
                "img2img_background_color": "#ffffff",
                "show_progress_every_n_steps": 1,
                "live_previews_enable": True,
                "live_previews_image_format": "png",
            }
        )

    async def set_options(self, request: web.Request) -> web.Response:
        """Only ``sd_model_checkpoint`` means something here, and only for this client (the backend is shared)."""
        client = self.client(request)
        async with client.body_slot:
            body = await self._json(request)
        if not isinstance(body, dict):
            raise FieldError((), "expected a JSON object of options")
        name = body.get("sd_model_checkpoint")
        if name is not None:
            models = self.hub.engine.models()
            found = find_model(name, models, "checkpoint") if isinstance(name, str) else None
            if found is None:
                raise FieldError(("sd_model_checkpoint",), _unknown_checkpoint(str(name), models))
            client.model = found.id
        return web.json_response(None)

    async def loras(self, request: web.Request) -> web.Response:
        """Clients write ``<lora:NAME:WEIGHT>`` into the prompt with a listed name (the file's name)."""
        return web.json_response(
            [{"name": name, "alias": name, "path": m.id, "metadata": {}} for m, name in self._named("lora")]
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        """Embeddings are used by name in the prompt or the negative prompt, as in A1111."""
        loaded = {
            name: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None, "vectors": None}
            for _, name in self._named("embedding")
        }
        return web.json_response({"loaded": loaded, "skipped": {}})

    def _named(self, kind: str) -> list[tuple[ModelInfo, str]]:
        """The catalogue's entries of ``kind`` with the name a prompt gives them (a catalogue id, no path)."""
        return [(m, m.id.rsplit("/", 1)[-1]) for m in self.hub.engine.models() if m.kind == kind]

    async def empty_list(self, request: web.Request) -> web.Response:
        return web.json_response([])

    # ------------------------------------------------------------------ the ControlNet extension

    async def controlnet_models(self, request: web.Request) -> web.Response:
        # the extension lists IP-Adapters among its models too
        kinds = ("controlnet", "ipadapter")
        return web.json_response({"model_list": [m.id for m in self.hub.engine.models() if m.kind in kinds]})

    async def controlnet_modules(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "module_list": list(MODULE_LIST),
                "module_detail": {m: {"model_free": False, "sliders": []} for m in MODULE_LIST},
            }
        )

    async def controlnet_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": 2})


def _default_checkpoint(models: list[ModelInfo]) -> ModelInfo:
    """A painter's own checkpoint when there is one; the built-in test model otherwise."""
    checkpoints = [m for m in models if m.kind == "checkpoint"]
    if not checkpoints:
        raise web.HTTPServiceUnavailable(
            text='{"detail": "No checkpoint is installed."}', content_type="application/json"
        )
    return next((m for m in checkpoints if not m.test), checkpoints[0])


def _unknown_checkpoint(name: str, models: list[ModelInfo]) -> str:
    names = ", ".join(m.id for m in models if m.kind == "checkpoint")
    return f"unknown checkpoint {name[:200]!r}; available: {names}"


def _job_error(error: JobError) -> web.Response:
    status = STATUS.get(error.code, 422)
    if status == 422:
        field = generation.A1111_NAMES.get(error.field.split(".")[1].split("[")[0] if "." in error.field else "", "")
        return web.json_response({"detail": [_problem((field,) if field else (), error.message)]}, status=422)
    return web.json_response({"detail": error.message, "error": error.code}, status=status)


def _problem(loc: tuple[str | int, ...], message: str) -> dict[str, Any]:
    """One entry of a 422 answer, as FastAPI (and so A1111) writes validation errors."""
    return {"loc": ["body", *loc], "msg": message, "type": "value_error"}


def field_error(exc: FieldError) -> web.Response:
    return web.json_response({"detail": [_problem(exc.loc, exc.message)]}, status=422)


# ------------------------------------------------------------------ on the image threads


def _answer(plan: generation.Plan, encoded: list[Encoded], echo: dict[str, Any], interrupted: bool) -> bytes:
    results = []
    for e in encoded:
        limits = DecodeLimits(max_message_bytes=max(e.size, 1024), max_pixels=HARD_MAX_PIXELS, max_batch=64)
        result = decode_encoded(e, limits)
        assert isinstance(result, Result)
        results.append(result)
    return json.dumps(generation.answer(plan, results, echo, interrupted)).encode()


def _preview_png(frame: bytes) -> str | None:
    message = decode(frame)
    if not isinstance(message, Progress) or message.preview is None:
        return None
    import numpy as np

    p = message.preview
    rgba = np.frombuffer(p.data, np.uint8).reshape(p.height, p.width, 4)
    return images.encode_png(np.ascontiguousarray(rgba[..., :3]))
