"""The engine on a Ray Serve cluster (``sfumato serve --ray``), tested on a local Ray started here on the
CPU: two replicas with one torch thread each, the tiny model, through the real websocket server and the
real client. Jobs of two editors run on both replicas at once, previews stream back, a cancel stops the
replica's engine early, a replica that dies mid-job has the job run again on another, and a second death
ends it with ``worker_failed`` while other editors' jobs carry on.

What each replica did is read from the files its engine (tests/backend/ray_replica.py) writes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import aio, backend_process, connected_client, submit, until

from sfumato.backend.config import Config, ConfigError, load_config
from sfumato.protocol import Cancelled, ErrorCode, JobError, Progress, Result, Started, Status

HERE = Path(__file__).parent


def _ray_config(model_cache: Path, **kw: Any) -> Config:
    kw = {"ray_replicas": 2, "ray_gpus_per_replica": 0.0, "ray_cpus_per_replica": 1.0, **kw}
    return Config(port=0, cache_dir=model_cache, ray_address="local", **kw)


@pytest.fixture(scope="module")
def cluster(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Any], Path]]:
    """A local Ray (3 CPUs, a small object store), the deployment's two replicas, one engine per slot."""
    import ray
    from ray import serve

    from sfumato.backend.cluster.deploy import deploy, undeploy
    from sfumato.backend.main import build_engines

    folder = tmp_path_factory.mktemp("replicas")
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=3,  # two replicas, and one for `sfumato serve --ray` in its own process
        object_store_memory=80 << 20,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}},
    )
    try:
        config = _ray_config(model_cache)
        checker = build_engines(Config(cache_dir=model_cache, device=["cpu"]))[0]
        from ray_replica import RecordingEngine

        engines = deploy(config, checker, functools.partial(RecordingEngine, str(folder)))
        yield engines, folder
        undeploy(config.ray_app, leave=False)
    finally:
        serve.shutdown()
        ray.shutdown()


def _steps(folder: Path, job_id: str) -> list[tuple[int, str]]:
    """What the replicas wrote for a job: (pid, step number or "cancelled") per line."""
    path = folder / f"{job_id}.steps"
    lines = path.read_text().split("\n") if path.exists() else []
    return [(int(pid), what) for pid, what in (line.split() for line in lines if line)]


@contextlib.asynccontextmanager
async def _ray_server(engines: list[Any], model_cache: Path) -> AsyncIterator[Any]:
    """The backend's front process with a worker slot per Ray replica, stopped after the test."""
    from sfumato.backend.cluster.remote import RayWorker
    from sfumato.backend.server.app import Server

    server = Server(_ray_config(model_cache), engines, worker=RayWorker)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=5)


@aio
async def test_two_editors_jobs_run_at_once_on_two_replicas_with_previews(
    cluster: tuple[list[Any], Path], model_cache: Path
) -> None:
    engines, folder = cluster
    async with _ray_server(engines, model_cache) as server:
        async with (
            connected_client(server.url, "a") as (a, ra),
            connected_client(server.url, "b") as (b, rb),
        ):
            assert a.welcome is not None and len(a.welcome.devices) == 2
            same = {"steps": 60, "strength": 1.0, "seed": 7}
            await a.submit(submit("a-par", **same))
            await b.submit(submit("b-par", **same))
            # both replicas hold a job at the same moment
            await until(
                lambda: len(server.hub.running) == 2 and all(_steps(folder, j) for j in ("a-par", "b-par")),
                timeout=60,
                what="both jobs running on replicas",
            )
            await a.request_status()
            status = await ra.wait_for(Status, timeout=10, count=len(ra.of(Status)) + 1)
            assert [d.state for d in status.devices] == ["running", "running"]
            assert [d.device.split(":")[0] for d in status.devices] == ["ray slot 0", "ray slot 1"]
            replicas = {d.device.split(": ")[1].split(" on ")[0] for d in status.devices}
            assert len(replicas) == 2 and all(d.device.endswith(": cpu") for d in status.devices)
            result_a = await ra.wait_for(Result, "a-par", timeout=90)
            result_b = await rb.wait_for(Result, "b-par", timeout=90)
        pids = {pid for job in ("a-par", "b-par") for pid, _ in _steps(folder, job)}
        assert len(pids) == 2  # one replica each
        assert result_a.images[0].data == result_b.images[0].data  # same request and seed, same pixels
        assert result_a.images[0].data != submit("x", **same).image.data
        started = ra.of(Started, "a-par")
        assert len(started) == 1 and started[0].steps == 60
        previews = [p for p in ra.of(Progress, "a-par") if p.preview is not None]
        assert previews and previews[0].preview.width == 64  # streamed from the replica while it ran
        assert ra.of(Progress, "a-par")[-1].step == 60


@aio
async def test_a_cancel_stops_the_replicas_engine_early(cluster: tuple[list[Any], Path], model_cache: Path) -> None:
    engines, folder = cluster
    async with _ray_server(engines, model_cache) as server, connected_client(server.url, "a") as (a, ra):
        await a.submit(submit("long", steps=200, strength=1.0))
        await ra.wait_for(Progress, "long", timeout=60)
        await a.cancel("long")
        await ra.wait_for(Cancelled, "long", timeout=10)
        await until(
            lambda: "cancelled" in {w for _, w in _steps(folder, "long")},
            timeout=10,
            what="the replica's engine to stop",
        )
        ran = [int(w) for _, w in _steps(folder, "long") if w != "cancelled"]
        assert ran and max(ran) < 200  # stopped early, not merely reported as stopped
        assert not ra.of(Result, "long")
        await a.submit(submit("after", steps=4))  # the replica is free again
        await ra.wait_for(Result, "after", timeout=60)


@aio
async def test_a_replica_that_dies_mid_job_has_its_job_run_again_on_another(
    cluster: tuple[list[Any], Path], model_cache: Path
) -> None:
    from ray_replica import DIE_AT

    engines, folder = cluster
    async with (
        _ray_server(engines, model_cache) as server,
        connected_client(server.url, "a") as (a, ra),
        connected_client(server.url, "b") as (b, rb),
    ):
        same = {"steps": 8, "strength": 1.0, "seed": 3}
        await b.submit(submit("calm", **same))
        calm = await rb.wait_for(Result, "calm", timeout=90)
        (folder / "die-doomed").write_text("1")
        await a.submit(submit("doomed", **same))
        retried = await ra.wait_for(Result, "doomed", timeout=120)
        assert retried.images[0].data == calm.images[0].data  # run again from the start: the same pixels
        lines = _steps(folder, "doomed")
        first_pid = lines[0][0]
        assert [w for p, w in lines if p == first_pid] == [str(s) for s in range(1, DIE_AT + 1)]  # died there
        assert {p for p, _ in lines} - {first_pid}  # finished on another replica
        assert (folder / "die-doomed").read_text() == "0"
        assert len(ra.of(Started, "doomed")) == 1 and not ra.of(JobError)


@aio
async def test_a_second_death_a_lost_device_ends_the_job_with_worker_failed_and_others_carry_on(
    cluster: tuple[list[Any], Path], model_cache: Path
) -> None:
    engines, folder = cluster
    async with (
        _ray_server(engines, model_cache) as server,
        connected_client(server.url, "a") as (a, ra),
        connected_client(server.url, "b") as (b, rb),
    ):
        await b.submit(submit("other", steps=40, strength=1.0))  # another editor's job, running meanwhile
        await rb.wait_for(Progress, "other", timeout=60)
        (folder / "die-cursed").write_text("1")  # the first replica's process ends
        (folder / "lose-cursed").write_text("1")  # the second's device is lost: it ends itself
        await a.submit(submit("cursed", steps=8, strength=1.0))
        failed = await ra.wait_for(JobError, "cursed", timeout=120)
        assert failed.code == ErrorCode.WORKER_FAILED and "died twice" in failed.message
        assert len({p for p, _ in _steps(folder, "cursed")}) == 2  # on two replicas
        assert (folder / "die-cursed").read_text() == (folder / "lose-cursed").read_text() == "0"
        await rb.wait_for(Result, "other", timeout=120)  # carried on to its end
        assert not rb.of(JobError) and not rb.of(Cancelled)
        await a.submit(submit("again", steps=4))  # the failed editor can go on too
        await ra.wait_for(Result, "again", timeout=120)


# ---------------------------------------------------------------------------- starting it


@aio
async def test_sfumato_serve_with_ray_joins_the_cluster_paints_and_leaves_it_clean(
    cluster: tuple[list[Any], Path], model_cache: Path
) -> None:
    import ray
    from ray import serve

    address = ray.get_runtime_context().gcs_address
    args = ("--ray", address, "--ray-app", "sfumato-cli", "--ray-replicas", "1", "--ray-gpus-per-replica", "0")
    with backend_process(model_cache, *args) as (url, proc):
        assert "sfumato-cli" in serve.status().applications  # beside the fixture's own application
        async with connected_client(url, "cli") as (client, rec):
            assert client.welcome is not None
            assert [d.device for d in client.welcome.devices] == ["ray slot 0: no job yet"]
            await client.submit(submit("via-cli", steps=4))
            result = await rec.wait_for(Result, "via-cli", timeout=120)
            assert result.images[0].width == 64
            await client.request_status()
            status = await rec.wait_for(Status, timeout=10, count=len(rec.of(Status)) + 1)
            assert status.devices[0].device.startswith("ray slot 0: ") and status.devices[0].device.endswith(": cpu")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert "sfumato-cli" not in serve.status().applications  # its replicas removed on the way out
    assert "sfumato" in serve.status().applications  # and nobody else's


def test_ray_settings_come_from_flags_and_the_config_file(tmp_path: Path) -> None:
    from sfumato.backend.cluster.deploy import replica_options, slots
    from sfumato.backend.main import add_server_arguments, config_from_args

    listed = tmp_path / "config.toml"
    listed.write_text('[server]\nray_address = "auto"\nray_gpus_per_replica = 0.5\nray_max_replicas = 8\n')
    import argparse

    p = argparse.ArgumentParser()
    add_server_arguments(p)
    config = config_from_args(p.parse_args(["--config", str(listed), "--ray-replicas", "3", "--ray-min-replicas", "1"]))
    assert (config.ray_address, config.ray_replicas, config.ray_min_replicas) == ("auto", 3, 1)
    options = replica_options(config)
    assert options["ray_actor_options"] == {"num_gpus": 0.5, "num_cpus": 1.0}
    assert options["autoscaling_config"]["min_replicas"] == 1 and options["autoscaling_config"]["max_replicas"] == 8
    assert options["autoscaling_config"]["initial_replicas"] == 3 and "num_replicas" not in options
    assert slots(config) == 8  # a worker for each replica there may be
    fixed = load_config(listed, env={}, ray_max_replicas=0, ray_replicas=2)
    assert replica_options(fixed)["num_replicas"] == 2 and slots(fixed) == 2
    bad_values = (
        {"ray_replicas": 0},
        {"ray_max_replicas": 65},
        {"ray_min_replicas": 9},
        {"ray_cpus_per_replica": 0},
        {"ray_app": ""},
    )
    for bad in bad_values:
        with pytest.raises(ConfigError, match="ray_"):
            load_config(listed, env={}, **bad)


def test_serve_without_ray_never_imports_ray() -> None:
    code = (
        "import argparse, sys\n"
        "from sfumato.backend import main\n"
        "from sfumato.backend.server import app, workers\n"
        "p = argparse.ArgumentParser()\n"
        "main.add_server_arguments(p)\n"
        "assert main.config_from_args(p.parse_args([])).ray_address is None\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
