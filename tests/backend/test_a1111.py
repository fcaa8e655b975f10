"""The AUTOMATIC1111 API, tested the way A1111 clients use it: JSON bodies with base64 PNGs, over HTTP on
loopback, against the real server, hub, worker and the built-in tiny model — beside websocket editors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import aio, connected_client, submit, until

from sfumato.backend.a1111.server import A1111Api
from sfumato.backend.config import Config, ConfigError
from sfumato.backend.server.app import Server
from sfumato.protocol import Cancelled, Queued, Result

TOKEN = "a1111-test-token-0123456789"

# ---------------------------------------------------------------------------- helpers


class HoldingEngine:
    """The real engine, except that a job whose prompt starts with "hold" waits after its second step until
    released — so a test can look at a running job without racing it. Records the order jobs start in."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reached = threading.Event()
        self.release = threading.Event()
        self.order: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, req: Any, seed: int, hooks: Any) -> Any:
        self.order.append(req.job_id)
        return self.inner.run(req, seed, _Holding(hooks, self) if req.prompt.startswith("hold") else hooks)


class _Holding:
    def __init__(self, hooks: Any, engine: HoldingEngine) -> None:
        self.hooks, self.engine = hooks, engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.hooks, name)

    def progress(self, step: int, total: int) -> None:
        self.hooks.progress(step, total)
        if step == 2:  # the first step's preview is out by now
            self.engine.reached.set()
            self.engine.release.wait(60)


@contextlib.asynccontextmanager
async def a1111_server(engine: Any, **config: Any) -> AsyncIterator[tuple[Server, str]]:
    config.setdefault("port", 0)
    server = Server(Config(a1111_api=True, a1111_port=0, **config), engine)
    await server.start()
    api = A1111Api(server)
    await api.start()
    try:
        yield server, api.url
    finally:
        if isinstance(engine, HoldingEngine):
            engine.release.set()
        await server.stop(grace_s=5)
        await api.stop()


def pattern(w: int, h: int, seed: int = 0) -> np.ndarray:
    rnd = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    rgb = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x ^ y) * 8 % 256], axis=-1)
    return (rgb + rnd.integers(0, 16, rgb.shape)).clip(0, 255).astype(np.uint8)


def b64png(pixels: np.ndarray, data_url: bool = False) -> str:
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="PNG")
    text = base64.b64encode(buf.getvalue()).decode()
    return f"data:image/png;base64,{text}" if data_url else text


def unpng(text: str) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


def basic(user: str, password: str) -> dict[str, str]:
    """HTTP basic auth, as A1111 clients send it for --api-auth."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def rect_mask(w: int, h: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 255
    return mask


async def post(http: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> tuple[int, Any]:
    async with http.post(url, json=body, **kw) as resp:
        return resp.status, await resp.json()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = "condition") -> None:
    """``until`` for conditions a request must check: polled, with a deadline."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def img2img(init: np.ndarray, **fields: Any) -> dict[str, Any]:
    h, w = init.shape[:2]
    body = {"init_images": [b64png(init)], "prompt": "a test", "steps": 4, "width": w, "height": h, "seed": 1}
    return body | fields


# ---------------------------------------------------------------------------- generation


@aio
async def test_img2img_answers_like_a1111(engine: Any) -> None:
    init = pattern(96, 64)
    body = img2img(init, width=64, height=48, denoising_strength=0.5, batch_size=2, seed=42, sampler_name="Euler a")
    body["init_images"] = [b64png(init, data_url=True)]  # as browser-based plug-ins send them
    async with a1111_server(engine) as (_, url), aiohttp.ClientSession() as http:
        status, out = await post(http, f"{url}/sdapi/v1/img2img", body)
    assert status == 200, out
    assert set(out) == {"images", "parameters", "info"}
    pictures = [unpng(img) for img in out["images"]]
    assert [p.shape for p in pictures] == [(48, 64, 3)] * 2
    assert not np.array_equal(pictures[0], pictures[1]), "a batch holds different pictures"
    params = out["parameters"]
    assert params["init_images"] is None and params["mask"] is None, "A1111 does not echo the images"
    assert params["steps"] == 4 and params["denoising_strength"] == 0.5 and params["cfg_scale"] == 7.0
    info = json.loads(out["info"])
    assert info["seed"] == 42 and info["all_seeds"] == [42, 43]
    assert info["width"] == 64 and info["height"] == 48 and info["sampler_name"] == "Euler a"
    assert info["sd_model_name"] == "builtin:tiny" and len(info["infotexts"]) == 2
    assert "Seed: 43" in info["infotexts"][1] and "Denoising strength: 0.5" in info["infotexts"][1]
    png = PILImage.open(io.BytesIO(base64.b64decode(out["images"][0])))
    assert png.format == "PNG" and "Seed: 42" in png.info["parameters"]


@aio
async def test_txt2img_is_img2img_from_grey_at_full_strength(engine: Any) -> None:
    body = {"prompt": "a test", "steps": 3, "width": 64, "height": 40, "seed": 5, "n_iter": 2}
    async with a1111_server(engine) as (_, url), aiohttp.ClientSession() as http:
        status, out = await post(http, f"{url}/sdapi/v1/txt2img", body)
    assert status == 200, out
    assert [unpng(img).shape for img in out["images"]] == [(40, 64, 3)] * 2
    info = json.loads(out["info"])
    assert info["all_seeds"] == [5, 6] and info["denoising_strength"] == 1.0


@aio
async def test_fixed_seeds_repeat_and_random_seeds_differ(engine: Any) -> None:
    init = pattern(64, 64)
    async with a1111_server(engine) as (_, url), aiohttp.ClientSession() as http:
        fixed = [await post(http, f"{url}/sdapi/v1/img2img", img2img(init, seed=7)) for _ in range(2)]
        random = [await post(http, f"{url}/sdapi/v1/img2img", img2img(init, seed=-1)) for _ in range(2)]
    assert all(status == 200 for status, _ in fixed + random)
    assert np.array_equal(unpng(fixed[0][1]["images"][0]), unpng(fixed[1][1]["images"][0]))
    seeds = [json.loads(out["info"])["seed"] for _, out in random]
    assert seeds[0] != seeds[1] and all(0 <= s < 2**32 for s in seeds)
    assert not np.array_equal(unpng(random[0][1]["images"][0]), unpng(random[1][1]["images"][0]))


@pytest.mark.parametrize("full_res", [True, False])
@aio
async def test_inpainting_leaves_every_pixel_outside_the_mask_unchanged(engine: Any, full_res: bool) -> None:
    init = pattern(64, 64, seed=3)
    mask = rect_mask(64, 64, 16, 20, 40, 44)
    body = img2img(
        init,
        mask=b64png(mask),
        mask_blur=0,
        denoising_strength=1.0,
        inpainting_fill=1,
        inpaint_full_res=full_res,
        inpaint_full_res_padding=8,
    )
    async with a1111_server(engine) as (_, url), aiohttp.ClientSession() as http:
        status, out = await post(http, f"{url}/sdapi/v1/img2img", body)
    assert status == 200, out
    result = unpng(out["images"][0])
    assert result.shape == init.shape
    outside = mask == 0
    assert np.array_equal(result[outside], init[outside]), "pixels outside the mask must be bit-identical"
    assert (result[~outside] != init[~outside]).any(), "the masked part was repainted"


@aio
async def test_inverted_and_blurred_masks_are_honoured(engine: Any) -> None:
    init = pattern(80, 80, seed=4)
    x0, y0, x1, y1 = 24, 24, 56, 56
    mask = rect_mask(80, 80, x0, y0, x1, y1)
    common = {"mask": b64png(mask), "denoising_strength": 1.0, "inpainting_fill": 1, "inpaint_full_res": False}
    inside = mask > 0
    # A1111's kernel for blur 4: 2·⌊2.5·4 + 0.5⌋ + 1 = 21 px, so the mask spreads 10 px at most
    near = np.zeros_like(inside)
    near[y0 - 10 : y1 + 10, x0 - 10 : x1 + 10] = True
    band = near & ~inside
    async with a1111_server(engine) as (_, url), aiohttp.ClientSession() as http:
        inverted = await post(
            http, f"{url}/sdapi/v1/img2img", img2img(init, inpainting_mask_invert=1, mask_blur=0, **common)
        )
        sharp = await post(http, f"{url}/sdapi/v1/img2img", img2img(init, mask_blur=0, **common))
        blurred = await post(http, f"{url}/sdapi/v1/img2img", img2img(init, mask_blur=4, **common))
    assert inverted[0] == sharp[0] == blurred[0] == 200
    inv = unpng(inverted[1]["images"][0])
    assert np.array_equal(inv[inside], init[inside]), "inverted: the white part of the mask is kept"
    assert (inv[~inside] != init[~inside]).any()
    sh, bl = unpng(sharp[1]["images"][0]), unpng(blurred[1]["images"][0])
    assert np.array_equal(sh[band], init[band]), "no blur: nothing outside the mask changes"
    assert (bl[band] != init[band]).any(), "blur: the mask's soft edge reaches outside the drawn rectangle"
    assert np.array_equal(bl[~near], init[~near]), "blur: nothing beyond the kernel's reach changes"


@aio
async def test_controlnet_units_through_alwayson_scripts(engine: Any) -> None:
    init = pattern(64, 64, seed=5)
    async with a1111_server(engine) as (_, url), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/controlnet/model_list") as resp:
            models = (await resp.json())["model_list"]
        assert "builtin:tiny-controlnet" in models
        unit = {"enabled": True, "module": "canny", "model": models[0], "weight": 0.8, "input_image": b64png(init)}
        disabled = {"enabled": False, "module": "depth_midas", "model": "whatever"}
        body = img2img(init, alwayson_scripts={"ControlNet": {"args": [unit, disabled]}})
        status, out = await post(http, f"{url}/sdapi/v1/img2img", body)
        assert status == 200, out
        assert unpng(out["images"][0]).shape == (64, 64, 3)
        unit_without_image = {"module": "canny", "model": models[0], "guidance_start": 0.2, "guidance_end": 0.8}
        body = img2img(init, alwayson_scripts={"controlnet": {"args": [unit_without_image]}})
        status, out = await post(http, f"{url}/sdapi/v1/img2img", body)
        assert status == 200, out


# ---------------------------------------------------------------------------- progress, interrupt, fairness


@aio
async def test_progress_shows_a_running_job_with_its_preview(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sfumato.backend.a1111 import routes

    encoded: list[bytes] = []
    real_png = routes._preview_png
    monkeypatch.setattr(routes, "_preview_png", lambda frame: encoded.append(frame) or real_png(frame))
    holding = HoldingEngine(engine)
    init = pattern(64, 64)
    async with a1111_server(holding) as (_, url), aiohttp.ClientSession() as http:
        job = asyncio.create_task(
            post(http, f"{url}/sdapi/v1/img2img", img2img(init, prompt="hold", steps=8, denoising_strength=1.0))
        )
        seen: dict[str, Any] = {}

        async def poll() -> bool:
            async with http.get(f"{url}/sdapi/v1/progress") as resp:
                seen.update(await resp.json())
            return seen["progress"] > 0 and seen["current_image"] is not None

        await until(lambda: holding.reached.is_set(), timeout=60, what="the job's second step")
        await eventually(poll, what="progress with a preview")  # the held job cannot finish meanwhile
        assert 0 < seen["progress"] < 1 and seen["eta_relative"] >= 0
        assert seen["state"]["sampling_steps"] == 8 and seen["state"]["sampling_step"] >= 1
        assert seen["state"]["job_count"] == 1 and seen["state"]["interrupted"] is False
        assert unpng(seen["current_image"]).ndim == 3
        async with http.get(f"{url}/sdapi/v1/progress") as resp:  # the held job has the same preview still
            assert (await resp.json())["current_image"] == seen["current_image"]
        assert len(encoded) == len(set(map(id, encoded))), "each preview frame is encoded to PNG once"
        async with http.get(f"{url}/sdapi/v1/progress", params={"skip_current_image": "true"}) as resp:
            assert (await resp.json())["current_image"] is None
        holding.release.set()
        status, out = await job
        assert status == 200 and len(out["images"]) == 1
        async with http.get(f"{url}/sdapi/v1/progress") as resp:
            idle = await resp.json()
        assert idle["progress"] == 0 and idle["state"]["job_count"] == 0


@aio
async def test_interrupt_stops_only_that_clients_jobs(engine: Any) -> None:
    holding = HoldingEngine(engine)
    init = pattern(64, 64)
    alice, bob = basic("alice", "x"), basic("bob", "x")
    async with (
        a1111_server(holding) as (server, url),
        aiohttp.ClientSession() as http,
        connected_client(server.url, "krita") as (editor, rec),
    ):
        held = asyncio.create_task(
            post(http, f"{url}/sdapi/v1/img2img", img2img(init, prompt="hold", steps=8, n_iter=2), headers=alice)
        )
        await until(lambda: holding.reached.is_set(), timeout=60, what="alice's first job to run")
        await editor.submit(submit("e0", steps=4))
        other = asyncio.create_task(post(http, f"{url}/sdapi/v1/img2img", img2img(init), headers=bob))
        await until(lambda: len(server.hub.queue) == 3, what="alice's second job, e0 and bob's job to wait")
        status, answer = await post(http, f"{url}/sdapi/v1/interrupt", None, headers=alice)
        assert status == 200 and answer == {}
        holding.release.set()
        status, out = await held
        assert status == 200 and out["images"] == [], "both of alice's jobs were cancelled"
        assert json.loads(out["info"])["interrupted"] is True
        await rec.wait_for(Result, "e0", timeout=120)
        assert not rec.of(Cancelled), "the websocket editor's job was not touched"
        status, out = await other
        assert status == 200 and len(out["images"]) == 1, "bob's job was not touched"


@aio
async def test_a_flooding_a1111_client_cannot_starve_an_editor(engine: Any) -> None:
    holding = HoldingEngine(engine)
    init = pattern(64, 64)
    async with (
        a1111_server(holding) as (server, url),
        aiohttp.ClientSession() as http,
        connected_client(server.url, "krita") as (editor, rec),
    ):
        first = asyncio.create_task(post(http, f"{url}/sdapi/v1/img2img", img2img(init, prompt="hold", steps=8)))
        await until(lambda: holding.reached.is_set(), timeout=60, what="the first job to run")
        flood = [
            asyncio.create_task(post(http, f"{url}/sdapi/v1/img2img", img2img(init, n_iter=3, seed=i)))
            for i in range(2)
        ]
        await until(lambda: len(server.hub.queue) == 6, what="the flood to be queued")
        await editor.submit(submit("e0", steps=4))
        queued = await rec.wait_for(Queued, "e0")
        assert queued.position == 1, "round-robin: one A1111 job, then the editor's"
        holding.release.set()
        await rec.wait_for(Result, "e0", timeout=120)
        results = [await first] + [await task for task in flood]
        assert [status for status, _ in results] == [200, 200, 200]
        assert holding.order.index("e0") == 2, holding.order
        assert len(holding.order) == 8


@aio
async def test_shutdown_answers_requests_in_flight(engine: Any) -> None:
    holding = HoldingEngine(engine)
    server = Server(Config(port=0, a1111_api=True, a1111_port=0), holding)
    await server.start()
    api = A1111Api(server)
    await api.start()
    try:
        async with aiohttp.ClientSession() as http:
            body = img2img(pattern(64, 64), prompt="hold", steps=8)
            running = asyncio.create_task(post(http, f"{api.url}/sdapi/v1/img2img", body))
            await until(lambda: holding.reached.is_set(), timeout=60, what="the job to run")
            waiting = asyncio.create_task(post(http, f"{api.url}/sdapi/v1/txt2img", {"steps": 2, "width": 64}))
            await until(lambda: len(server.hub.queue) == 1, what="the second request to wait")
            stopping = asyncio.create_task(server.stop(grace_s=5))  # what SIGTERM does first
            await until(lambda: server.hub.closing, what="the hub to close")
            holding.release.set()
            for status, out in (await running, await waiting):
                assert status == 503 and "shutting down" in out["detail"]
            await stopping
    finally:
        holding.release.set()
        await api.stop()


# ---------------------------------------------------------------------------- security and limits


@aio
async def test_basic_auth_is_required_when_a_token_is_set(engine: Any) -> None:
    async with a1111_server(engine, token=TOKEN) as (_, url), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/sdapi/v1/sd-models") as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Basic")
        async with http.get(f"{url}/sdapi/v1/sd-models", headers=basic("me", "wrong")) as resp:
            assert resp.status == 401
        body = img2img(pattern(32, 32))
        status, _ = await post(http, f"{url}/sdapi/v1/img2img", body, headers=basic("me", "not-it"))
        assert status == 401
        async with http.get(f"{url}/sdapi/v1/sd-models", headers=basic("me", TOKEN)) as resp:
            assert resp.status == 200
            assert "builtin:tiny" in [m["title"] for m in await resp.json()]


def test_off_loopback_the_api_refuses_to_start_without_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from sfumato.backend.main import add_server_arguments, config_from_args

    for name in ("SFUMATO_TOKEN", "SFUMATO_HOST", "SFUMATO_A1111_PORT", "SFUMATO_A1111_API"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "config.toml").write_text("")
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)

    def config(*argv: str) -> Config:
        return config_from_args(parser.parse_args(["--config", str(tmp_path / "config.toml"), *argv]))

    with pytest.raises(ConfigError, match="token"):
        config("--host", "0.0.0.0", "--a1111-api")
    assert (config("--a1111-api").a1111_api, config("--a1111-api").a1111_port) == (True, 7861)
    assert config("--a1111-api", "0").a1111_port == 0
    assert config().a1111_api is False
    remote = config("--host", "0.0.0.0", "--a1111-api", "9000", "--token", TOKEN)
    assert remote.a1111_api and remote.a1111_port == 9000


@aio
async def test_browser_origins_are_refused_unless_allowed(engine: Any) -> None:
    allowed = "https://www.photopea.com"
    async with a1111_server(engine, allowed_origins=[allowed]) as (_, url), aiohttp.ClientSession() as http:
        for origin in ("https://evil.example", "null"):
            async with http.get(f"{url}/sdapi/v1/sd-models", headers={"Origin": origin}) as resp:
                assert resp.status == 403
            status, _ = await post(
                http, f"{url}/sdapi/v1/img2img", img2img(pattern(32, 32)), headers={"Origin": origin}
            )
            assert status == 403
        async with http.get(f"{url}/sdapi/v1/samplers", headers={"Origin": allowed}) as resp:
            assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == allowed
        headers = {"Origin": allowed, "Access-Control-Request-Method": "POST"}
        async with http.options(f"{url}/sdapi/v1/img2img", headers=headers) as resp:
            assert resp.status == 204 and "POST" in resp.headers["Access-Control-Allow-Methods"]


@pytest.mark.parametrize("expect_continue", [False, True])
@aio
async def test_an_oversized_body_is_refused_before_it_is_read(engine: Any, expect_continue: bool) -> None:
    async with a1111_server(engine, max_message_mib=1) as (_, url):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (
            "POST /sdapi/v1/img2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {8 << 20}\r\n" + ("Expect: 100-continue\r\n" if expect_continue else "") + "\r\n"
        )
        writer.write(head.encode() + (b"" if expect_continue else b'{"init_images": ["' + b"A" * 4096))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)  # to EOF: the server closes without reading on
        writer.close()
        await writer.wait_closed()
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"100 Continue" not in answer
    assert b"max_message_mib" in answer


@aio
async def test_a_clients_memory_budget_holds(engine: Any) -> None:
    async with a1111_server(engine, editor_memory_mib=1) as (_, url), aiohttp.ClientSession() as http:
        status, out = await post(http, f"{url}/sdapi/v1/img2img", img2img(pattern(512, 512)))
    assert status == 413 and "MiB" in out["detail"] and out["error"] == "too_large"


@pytest.mark.parametrize(
    ("route", "fields", "loc", "words"),
    [
        ("img2img", {"steps": "many"}, ["body", "steps"], "integer"),
        ("img2img", {"steps": 500}, ["body", "steps"], "from 1 to 200"),
        ("img2img", {"denoising_strength": 2}, ["body", "denoising_strength"], "from 0 to 1"),
        ("img2img", {"sampler_name": "Heun"}, ["body", "sampler_name"], "Euler a"),
        ("img2img", {"sampler_name": "Euler", "scheduler": "Exponential"}, ["body", "scheduler"], "Automatic"),
        ("img2img", {"init_images": []}, ["body", "init_images"], "at least one"),
        ("img2img", {"init_images": ["%%% not base64"]}, ["body", "init_images", 0], "PNG"),
        ("img2img", {"mask": b64png(np.zeros((32, 32), np.uint8))}, ["body", "mask"], "empty"),
        ("img2img", {"batch_size": 9}, ["body", "batch_size"], "max_batch"),
        ("img2img", {"width": 8192, "height": 8192}, ["body", "width"], "max_pixels"),
        (
            "img2img",
            {"override_settings": {"sd_model_checkpoint": "nope"}},
            ["body", "override_settings", "sd_model_checkpoint"],
            "builtin:tiny",
        ),
        (
            "img2img",
            {"alwayson_scripts": {"adetailer": {"args": []}}},
            ["body", "alwayson_scripts", "adetailer"],
            "controlnet",
        ),
        (
            "img2img",
            {"alwayson_scripts": {"controlnet": {"args": [{"module": "canny", "model": "nope"}]}}},
            ["body", "alwayson_scripts", "controlnet", "args", 0, "model"],
            "builtin:tiny-controlnet",
        ),
        ("img2img", {"steps": 1, "denoising_strength": 0.5}, ["body", "steps"], "raise steps or strength"),
        ("txt2img", {"enable_hr": True}, ["body", "enable_hr"], "hires"),
        ("txt2img", {"restore_faces": True}, ["body", "restore_faces"], "not supported"),
    ],
)
@aio
async def test_bad_fields_are_answered_with_422_naming_the_field(
    engine: Any, route: str, fields: dict[str, Any], loc: list[Any], words: str
) -> None:
    body = img2img(pattern(32, 32), **fields)
    async with a1111_server(engine) as (_, url), aiohttp.ClientSession() as http:
        status, out = await post(http, f"{url}/sdapi/v1/{route}", body)
    assert status == 422, out
    problem = out["detail"][0]
    assert problem["loc"] == loc and words in problem["msg"], problem


@aio
async def test_a_body_that_is_not_json_is_a_422(engine: Any) -> None:
    async with (
        a1111_server(engine) as (_, url),
        aiohttp.ClientSession() as http,
        http.post(f"{url}/sdapi/v1/img2img", data=b"{not json", headers={"Content-Type": "application/json"}) as resp,
    ):
        assert resp.status == 422 and "not JSON" in (await resp.json())["detail"][0]["msg"]


# ---------------------------------------------------------------------------- lists and options


@aio
async def test_models_samplers_options_and_controlnet_lists(engine: Any) -> None:
    async with a1111_server(engine) as (_, url), aiohttp.ClientSession() as http:

        async def get(path: str, **kw: Any) -> Any:
            async with http.get(f"{url}{path}", **kw) as resp:
                assert resp.status == 200, path
                return await resp.json()

        models = await get("/sdapi/v1/sd-models")
        assert {"title", "model_name", "hash", "sha256", "filename", "config"} <= set(models[0])
        assert "builtin:tiny" in [m["title"] for m in models]
        assert all(not m["filename"].startswith("/") for m in models), "no file path leaves the server"
        samplers = await get("/sdapi/v1/samplers")
        assert {"Euler a", "Euler", "DPM++ 2M", "DDIM", "UniPC"} <= {s["name"] for s in samplers}
        assert {"name", "aliases", "options"} == set(samplers[0])
        assert {"automatic", "karras"} <= {s["name"] for s in await get("/sdapi/v1/schedulers")}
        options = await get("/sdapi/v1/options")
        assert options["sd_model_checkpoint"] == "builtin:tiny" and options["return_grid"] is False
        status, out = await post(http, f"{url}/sdapi/v1/options", {"sd_model_checkpoint": "nope"})
        assert status == 422 and out["detail"][0]["loc"] == ["body", "sd_model_checkpoint"]
        status, out = await post(http, f"{url}/sdapi/v1/options", {"sd_model_checkpoint": "builtin:tiny [0123abcd]"})
        assert status == 200 and out is None
        modules = await get("/controlnet/module_list")
        assert {"none", "canny"} <= set(modules["module_list"])
        assert await get("/controlnet/version") == {"version": 2}
        assert await get("/sdapi/v1/loras") == []  # the built-in model's catalogue has none
        assert await get("/sdapi/v1/embeddings") == {"loaded": {}, "skipped": {}}


@aio
async def test_listed_loras_and_embeddings_work_by_their_listed_names(
    tmp_path: Path, model_cache: Path, engine: Any
) -> None:
    """A client lists the LoRAs, writes `<lora:NAME:WEIGHT>` with a listed name, and the picture changes."""
    from addon_files import a1111_embedding, kohya_lora
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from sfumato.backend.engine import Engine
    from sfumato.backend.models.builtin import ensure_builtin
    from sfumato.backend.models.catalogue import Catalogue

    tiny, _ = ensure_builtin(model_cache)
    models = tmp_path / "stable-diffusion-webui" / "models"
    unet = UNet2DConditionModel.from_pretrained(tiny / "unet")
    kohya_lora(models / "Lora" / "detail.safetensors", unet, CLIPTextModel.from_pretrained(tiny / "text_encoder"))
    a1111_embedding(models.parent / "embeddings" / "EasyNegative.safetensors", width=32, vectors=3, scale=2.0)
    painter = Engine(Catalogue.scan([models], model_cache), device="cpu")
    body = img2img(pattern(64, 64), denoising_strength=0.7, seed=3)
    async with a1111_server(painter) as (_, url), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/sdapi/v1/loras") as resp:
            loras = await resp.json()
        async with http.get(f"{url}/sdapi/v1/embeddings") as resp:
            embeddings = await resp.json()
        assert [lora["name"] for lora in loras] == ["detail"] and not loras[0]["path"].startswith("/")
        assert list(embeddings["loaded"]) == ["EasyNegative"] and embeddings["skipped"] == {}
        _, plain = await post(http, f"{url}/sdapi/v1/img2img", body)
        _, with_lora = await post(http, f"{url}/sdapi/v1/img2img", body | {"prompt": "a test <lora:detail:1.0>"})
        _, negative = await post(http, f"{url}/sdapi/v1/img2img", body | {"negative_prompt": "EasyNegative"})
    plain_px = unpng(plain["images"][0]).astype(int)
    assert np.abs(unpng(with_lora["images"][0]).astype(int) - plain_px).mean() > 1.0
    assert np.abs(unpng(negative["images"][0]).astype(int) - plain_px).mean() > 1.0


def test_sfumato_serve_answers_the_api_with_its_flag(model_cache: Path) -> None:
    """The flag, as a painter starts it: a backend process with `--a1111-api 0`, and a clean shutdown."""
    import os
    import subprocess
    import urllib.request

    env = {**os.environ, "SFUMATO_CACHE_DIR": str(model_cache), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "sfumato.backend", "--port", "0", "--device", "cpu", "--a1111-api", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        assert proc.stdout is not None
        try:
            lines = []
            for line in proc.stdout:  # ends if the process dies
                lines.append(line)
                if line.strip().startswith("A1111:"):
                    break
            else:
                raise AssertionError("no A1111 line:\n" + "".join(lines))
            assert lines[0].startswith("listening on ws://"), "the first line stays the websocket's"
            url = line.split()[1].removesuffix("/sdapi/v1/")
            with urllib.request.urlopen(f"{url}/sdapi/v1/sd-models", timeout=30) as resp:
                assert resp.status == 200 and "builtin:tiny" in resp.read().decode()
        finally:
            proc.terminate()
            rest = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0, rest


def test_an_ip_adapter_units_long_strip_is_scaled_like_an_editors_reference_not_refused() -> None:
    """5000×300: its shorter side to 224 would make it 3733 long, over what a reference may be; it is scaled
    as the editors scale theirs (protocol.reference_size), within both limits."""
    import numpy as np

    from sfumato.backend.a1111.fields import ControlUnit
    from sfumato.backend.a1111.generation import _reference
    from sfumato.protocol import MAX_REFERENCE_SIDE, reference_size

    strip = np.zeros((300, 5000, 3), dtype=np.uint8)
    strip[:, ::2] = 255
    unit = ControlUnit(0, None, None, False, None, 0.7, 0.0, 1.0, 0, adapter=True)
    ref = _reference(unit, strip, (), 10**8)
    assert (ref.image.width, ref.image.height) == reference_size(5000, 300) == (MAX_REFERENCE_SIDE, 61)
    assert ref.weight == 0.7 and len(ref.image.data) == MAX_REFERENCE_SIDE * 61 * 4
