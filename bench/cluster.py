"""The engine on Ray Serve (``sfumato serve --ray``) against the in-process worker, with the tiny model.

Starts a local Ray on this machine (replicas on the CPU, one torch thread each) and measures, through
the real server and a real client, ratios against baselines measured in the same run:

(a) one job through Ray Serve vs through the in-process worker, the same torch thread count on both
    sides (median of interleaved pair ratios)                                   (goal ≤ 1.1× per job)
(b) throughput of two editors' jobs with two replicas vs one replica (interleaved rounds, the
    deployment rescaled between them)                                           (two cores: ≈ 2×)

    python bench/cluster.py [--quick] [--record]     (--record writes bench/results/cluster-cpu.json)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import Recorder, connected_client, submit

from sfumato.backend.config import Config
from sfumato.protocol import Result

STEPS = 20  # per job; strength 1.0 so every step runs
CACHE = Path(tempfile.gettempdir()) / "sfumato-bench-cache"
RESULTS = Path(__file__).resolve().parent / "results" / "cluster-cpu.json"


def job(job_id: str) -> Any:
    return submit(job_id, steps=STEPS, strength=1.0, seed=1)


def ray_config(replicas: int) -> Config:
    return Config(port=0, cache_dir=CACHE, ray_address="local", ray_replicas=replicas, ray_gpus_per_replica=0.0)


async def one_job(client: Any, rec: Recorder, job_id: str, outside: list[float] | None = None) -> float:
    """A job's time as its editor sees it; ``outside`` gets the part spent outside the engine's run."""
    t = time.perf_counter()
    await client.submit(job(job_id))
    result = await rec.wait_for(Result, job_id, timeout=300)
    took = time.perf_counter() - t
    if outside is not None:
        outside.append(took - result.timings["total"])
    return took


async def bench_overhead(local: Any, remote: list[Any], n: int) -> dict[str, float]:
    from sfumato.backend.cluster.remote import RayWorker
    from sfumato.backend.server.app import Server

    servers = [Server(Config(port=0, cache_dir=CACHE), [local]), Server(ray_config(1), remote[:1], worker=RayWorker)]
    for server in servers:
        await server.start()
    try:
        async with (
            connected_client(servers[0].url, "local") as (lc, lr),
            connected_client(servers[1].url, "ray") as (rc, rr),
        ):
            await one_job(lc, lr, "warm-local")
            await one_job(rc, rr, "warm-ray")
            in_process, via_ray, ratios = [], [], []
            outside: tuple[list[float], list[float]] = ([], [])
            for i in range(n):  # interleaved, alternating which goes first
                first_local = i % 2 == 0
                for which in (0, 1) if first_local else (1, 0):
                    if which == 0:
                        in_process.append(await one_job(lc, lr, f"l{i}", outside[0]))
                    else:
                        via_ray.append(await one_job(rc, rr, f"r{i}", outside[1]))
                ratios.append(via_ray[-1] / in_process[-1])
    finally:
        for server in servers:
            await server.stop(grace_s=5)
    a, b, r = statistics.median(in_process), statistics.median(via_ray), statistics.median(ratios)
    oa, ob = statistics.median(outside[0]), statistics.median(outside[1])
    print(
        f"(a) one job: in-process worker {a * 1000:.0f} ms, through Ray Serve {b * 1000:.0f} ms "
        f"→ median pair ratio {r:.3f}× (+{(b - a) * 1000:.0f} ms)   goal ≤ 1.1×\n"
        f"    outside the engine's run (queue, transport, encoding; the engine's own timing subtracted): "
        f"in-process {oa * 1000:.1f} ms, Ray {ob * 1000:.1f} ms"
    )
    return {"in_process_s": a, "ray_s": b, "ratio": r, "pairs": n, "outside_in_process_s": oa, "outside_ray_s": ob}


async def throughput(engines: list[Any], replicas: int, jobs: int) -> float:
    """Two editors × ``jobs`` each, through ``replicas`` slots; the wall time."""
    from sfumato.backend.cluster.remote import RayWorker
    from sfumato.backend.server.app import Server

    server = Server(ray_config(replicas), engines[:replicas], worker=RayWorker)
    await server.start()
    try:
        async with connected_client(server.url, "a") as (a, ra), connected_client(server.url, "b") as (b, rb):
            t = time.perf_counter()
            for j in range(jobs):
                await a.submit(job(f"a{j}"))
                await b.submit(job(f"b{j}"))
            for j in range(jobs):
                await ra.wait_for(Result, f"a{j}", timeout=600)
                await rb.wait_for(Result, f"b{j}", timeout=600)
            return time.perf_counter() - t
    finally:
        await server.stop(grace_s=5)


async def main(quick: bool, record: bool) -> None:
    import ray
    import torch
    from ray import serve

    from sfumato.backend.cluster.deploy import connect, deploy, undeploy
    from sfumato.backend.main import build_engines

    torch.set_num_threads(1)  # the in-process worker gets what a replica gets: one thread
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    connect("local")
    try:
        local = build_engines(Config(cache_dir=CACHE, device=["cpu"]))[0]
        print(f"device: cpu (1 torch thread per job), tiny model, 64×64, {STEPS} steps per job, {os.cpu_count()} cores")
        remote = deploy(ray_config(1), local)
        overhead = await bench_overhead(local, remote, 6 if quick else 12)

        jobs = 4 if quick else 8
        walls: dict[int, list[float]] = {1: [], 2: []}
        for r in range(2 if quick else 3):  # interleaved rounds, alternating which goes first
            for replicas in (1, 2) if r % 2 == 0 else (2, 1):
                engines = deploy(ray_config(replicas), local)  # rescales the deployment in place
                await throughput(engines, replicas, 1)  # every replica warm
                walls[replicas].append(await throughput(engines, replicas, jobs))
        ratios = [one / two for one, two in zip(walls[1], walls[2])]
        print(
            f"(b) 2 editors × {jobs} jobs: one replica {statistics.median(walls[1]):.1f} s, two replicas "
            f"{statistics.median(walls[2]):.1f} s → throughput ratios {', '.join(f'{x:.2f}' for x in ratios)}, "
            f"median {statistics.median(ratios):.2f}×"
        )
        figures = {
            "machine": f"{os.cpu_count()} cores, CPU only",
            "model": f"builtin:tiny, 64×64, {STEPS} steps",
            "overhead": overhead,
            "throughput": {"jobs": 2 * jobs, "one_replica_s": walls[1], "two_replicas_s": walls[2], "ratios": ratios},
        }
        if record:
            RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
            print(f"wrote {RESULTS}")
        undeploy(ray_config(1).ray_app, leave=False)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer jobs")
    p.add_argument("--record", action="store_true", help=f"write {RESULTS.name}")
    args = p.parse_args()
    asyncio.run(main(args.quick, args.record))
