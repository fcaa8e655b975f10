"""``sfumato serve``: the composition root of the backend. Nothing here runs at import time."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config, ConfigError, load_config
from .devices import DEVICE_NAMES
from .models.placement import MEMORY_MODES

if TYPE_CHECKING:
    from .engine import Engine
    from .models.catalogue import Catalogue
    from .server.app import Server
    from .server.hub import EngineLike


def build_engines(config: Config) -> list[Engine]:
    """One engine per device of ``config.device`` (one worker each), sharing one catalogue."""
    import os

    if not config.allow_download:  # before the hub library is imported: it reads this once
        os.environ["HF_HUB_OFFLINE"] = "1"
    from .quiet import quiet_libraries

    quiet_libraries()
    from .devices import expand, share_cpu
    from .models.catalogue import Catalogue

    catalogue = Catalogue.scan(
        config.model_dirs, config.cache_dir, builtin=config.builtin_models, allow_hub=config.allow_download
    )
    devices = expand(config.device)
    share_cpu(devices)
    return [_engine(config, catalogue, device) for device in devices]


def _engine(config: Config, catalogue: Catalogue, device: str) -> Engine:
    from .engine import Engine

    return Engine(catalogue, device, config.precision, int(config.model_memory_gib * (1 << 30)), memory=config.memory)


def renew_engine(config: Config, old: EngineLike) -> Engine:
    """A fresh engine (an empty pipeline cache) on a failed worker's device."""
    from .engine import Engine

    assert isinstance(old, Engine)
    return _engine(config, old.catalogue, old.device)


def banner(config: Config, engines: Sequence[EngineLike], url: str) -> str:
    """What a painter needs to know next, in a few lines."""
    models = engines[0].models()
    checkpoints = [m for m in models if m.kind == "checkpoint" and not m.test]
    controlnets = [m for m in models if m.kind == "controlnet" and not m.test]
    labels = [e.device_label() for e in engines]
    no_gpu = all(label == "cpu" for label in labels)
    lines = [f"  device:  {', '.join(labels)}" + ("  (no GPU found: real models will be slow)" if no_gpu else "")]
    if config.ray_address:
        lines = [f"  device:  Ray Serve ({config.ray_address}): up to {len(engines)} replicas, a job at once on each"]
    elif len(engines) > 1:
        lines[0] += f"  (a worker on each: {len(engines)} jobs at once)"
    if checkpoints:
        lines.append(f"  models:  {len(checkpoints)} checkpoints, {len(controlnets)} ControlNets (`sfumato models`)")
    else:
        lines.append("  models:  only builtin:tiny, a test model with random weights: it paints noise")
        lines.append("           add yours with --models ~/stable-diffusion-webui/models (A1111 or ComfyUI folders)")
    lines.append(f"  Krita:   Settings > Dockers > Sfumato, server {url} (restart Krita after the first install)")
    if config.token:
        lines.append("  token:   editors must give the token set with --token / SFUMATO_TOKEN")
    lines.append("  stop:    Ctrl+C (running jobs are cancelled and every editor is told)")
    return "\n".join(lines)


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to bind (default 127.0.0.1; anything else needs --token)")
    p.add_argument("--port", type=int, help="port (default 7860; 0 picks a free one)")
    p.add_argument(
        "--models",
        dest="model_dirs",
        action="append",
        type=Path,
        metavar="DIR",
        help="a model folder (repeatable); A1111/ComfyUI 'models' folders work",
    )
    p.add_argument(
        "--device",
        action="append",
        help=f"{DEVICE_NAMES}; repeat it for a worker on each device (all: every GPU)",
    )
    p.add_argument("--precision", choices=("auto", "fp16", "bf16", "fp32"))
    p.add_argument(
        "--memory",
        choices=MEMORY_MODES,
        help="where model weights live: all on the GPU (high), moved in per component (medium), per layer "
        "(low); auto (default) picks from the free GPU memory and the model's size",
    )
    p.add_argument("--token", help="shared secret editors must present (required off loopback)")
    p.add_argument(
        "--allow-origin",
        dest="allowed_origins",
        action="append",
        metavar="ORIGIN",
        help="a browser origin allowed to connect (repeatable; none by default)",
    )
    p.add_argument(
        "--allow-download",
        action="store_true",
        default=None,
        help="allow hf:owner/name diffusers repositories to be downloaded (local models never need it)",
    )
    p.add_argument("--max-pixels", type=int, help="largest image accepted, width × height")
    p.add_argument("--max-message-mib", type=int, help="largest frame accepted, MiB")
    p.add_argument("--resume-ttl", dest="resume_ttl_s", type=float, help="seconds a dropped editor's jobs wait")
    p.add_argument(
        "--a1111-api",
        dest="a1111_port",
        nargs="?",
        type=int,
        const=-1,
        metavar="PORT",
        help="also answer AUTOMATIC1111's HTTP API, on PORT (default 7861; 0 picks a free one)",
    )
    ray = p.add_argument_group("cluster", "the engine on a Ray Serve cluster, a replica per GPU (sfumato[cluster])")
    ray.add_argument("--ray", dest="ray_address", metavar="ADDRESS", help="auto (the cluster here) or host:port")
    ray.add_argument("--ray-replicas", type=int, help="replicas, i.e. jobs at once (default 1)")
    ray.add_argument("--ray-gpus-per-replica", type=float, help="default 1; 0 on a CPU-only cluster")
    ray.add_argument("--ray-cpus-per-replica", type=float, help="default 1")
    ray.add_argument("--ray-min-replicas", type=int, help="autoscaling: fewest replicas (with --ray-max-replicas)")
    ray.add_argument("--ray-max-replicas", type=int, help="autoscaling: most replicas (0: no autoscaling)")
    ray.add_argument("--ray-app", help="the Serve application's name (default sfumato; one per front on a cluster)")
    p.add_argument("--config", type=Path, help="TOML file (default: the user config folder's config.toml)")


def config_from_args(args: argparse.Namespace) -> Config:
    keys = (
        "host",
        "port",
        "model_dirs",
        "device",
        "precision",
        "memory",
        "token",
        "allowed_origins",
        "allow_download",
        "max_pixels",
        "max_message_mib",
        "resume_ttl_s",
        "ray_address",
        "ray_replicas",
        "ray_gpus_per_replica",
        "ray_cpus_per_replica",
        "ray_min_replicas",
        "ray_max_replicas",
        "ray_app",
    )
    flags = {k: getattr(args, k) for k in keys}
    if getattr(args, "a1111_port", None) is not None:  # --a1111-api [PORT]; without PORT: the configured one
        flags.update(a1111_api=True, a1111_port=args.a1111_port if args.a1111_port >= 0 else None)
    return load_config(args.config, **flags)


async def serve(config: Config) -> None:
    from .memory import return_large_blocks
    from .server.app import Server

    return_large_blocks()

    if config.ray_address:
        engines, server = await _cluster_server(config)
    else:
        engines = build_engines(config)
        server = Server(config, engines, renew=functools.partial(renew_engine, config))
    await server.start()
    print(f"listening on {server.url}", flush=True)  # the first line: scripts and tests wait for it
    print(banner(config, engines, server.url), flush=True)
    api = None
    if config.a1111_api:
        from .a1111.server import A1111Api

        api = A1111Api(server)
        await api.start()
        print(f"  A1111:   {api.url}/sdapi/v1/ for AUTOMATIC1111 API clients", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    await stop.wait()
    print("shutting down: cancelling jobs and telling editors", flush=True)
    await server.stop()  # cancels every job first: A1111 requests in flight answer, then close
    if api is not None:
        await api.stop()
    if config.ray_address:
        from .cluster.deploy import undeploy

        await asyncio.to_thread(undeploy, config.ray_app)


async def _cluster_server(config: Config) -> tuple[list[Any], Server]:
    """``--ray``: the engine deployed on the cluster, a worker per replica slot; checks run on a local
    CPU engine that never runs a job (it only reads the catalogue)."""
    import dataclasses

    from .cluster.deploy import connect, deploy
    from .cluster.remote import RayWorker
    from .server.app import Server

    await asyncio.to_thread(connect, config.ray_address or "auto")
    checker = build_engines(dataclasses.replace(config, device=["cpu"]))[0]
    engines = await asyncio.to_thread(deploy, config, checker)
    return engines, Server(config, engines, worker=RayWorker)


def serve_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sfumato serve", description="Run the Sfumato backend.")
    add_server_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"sfumato serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sfumato serve: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0
