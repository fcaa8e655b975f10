"""One run: start the backend, warm up the honest editor, fuzz on every connection at once, settle, summarise."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfumato.protocol import DecodeLimits, Submit, decode

from .bodies import pack
from .connection import Fuzzer
from .figures import ms, pctl
from .generator import STRATEGIES
from .probe import Probe
from .seeds import Seeds
from .server import Backend, rss_mib
from .stats import Stats


@dataclass
class Outcome:
    """What a run measured that the summary reports beyond the shared tallies."""

    probe: Probe
    rss_before: float
    rss_after: float
    rss_peak: float
    fuzz_s: float
    t_start: float


class Bench:
    """The state the fuzz connections share: the backend, the tallies, and the timeline the summary explains."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seeds = Seeds()
        self.stats = Stats()
        self.big = DecodeLimits(max_message_bytes=1 << 30, max_pixels=1 << 26)
        self.server = Backend()
        self.unanswered: list[str] = []
        self.job_labels: dict[str, str] = {}
        self.fuzz_jobs: dict[str, list[float]] = {}
        self.big_frames: list[tuple[float, int, str, bool]] = []

    @property
    def url(self) -> str:
        return self.server.url

    def dead(self) -> bool:
        return self.server.died()

    def job_event(self, kind: str, job_id: Any) -> None:
        """When fuzz jobs the server accepted ran (to explain the honest editor's worst wait)."""
        now = time.perf_counter()
        if kind == "started" and job_id in self.job_labels:
            self.fuzz_jobs[job_id] = [now, math.inf]
        elif job_id in self.fuzz_jobs:
            self.fuzz_jobs[job_id][1] = min(self.fuzz_jobs[job_id][1], now)

    def dump(self, fuzzers: list[Fuzzer]) -> None:
        for f in fuzzers:
            head = [f"{g.seq} {g.kind} {g.strategy}: {g.mutation}" for g in list(f.ledger.inflight)[:4]]
            print(f"\nfuzzer {f.index}: closed {f.ledger.closed}, in flight {head}, awaiting {list(f.ledger.awaiting)}")

    async def run(self, summarize: Callable[[Bench, Outcome], dict[str, Any]]) -> dict[str, Any]:
        """The run, then ``summarize`` (while the backend still runs), then SIGTERM: its exit code is a figure too."""
        with tempfile.TemporaryDirectory(prefix="sfumato-fuzz-") as tmpdir:
            t_start = time.perf_counter()
            proc = self.server.start(Path(tmpdir))
            try:
                figures = summarize(self, await self._run(t_start))
            finally:
                self.server.stop(proc)
            if not self.server.dead:
                figures["server_exit_code_after_sigterm"] = proc.returncode
                print(f"server exit code after SIGTERM: {proc.returncode} (0 = graceful shutdown)")
            return figures

    async def _run(self, t_start: float) -> Outcome:
        args, server = self.args, self.server
        proc = server.proc
        assert proc is not None
        probe = self.probe = Probe(self.url)
        await probe.call(probe.open())
        print(f"backend pid {proc.pid} at {self.url}; warming up (the first job writes and loads the tiny model)")
        first = await probe.call(probe.job())
        for seed in ("inpaint", "controlnet"):  # their pipelines are derived (and the ControlNet made) at first use
            req = decode(pack(self.seeds.submits[seed]))
            assert isinstance(req, Submit)
            if await probe.call(probe.job(req)) is None:
                print(f"  (the {seed} warm-up job failed: {dict(probe.failures)})")
        probe.latency.clear()
        probe.failures.clear()
        await probe.call(probe.background())
        await asyncio.sleep(0.1)
        while probe.jobs_done < 6 and len(probe.rtt["quiet"]) < 400:
            await asyncio.sleep(0.2)
        probe.phase = "fuzz"
        await asyncio.sleep(0.5)
        rss_before = rss_mib(proc.pid)
        print(
            f"warm-up job {ms(first or float('nan'))}; quiet: job median "
            f"{ms(pctl(probe.latency['quiet'], 0.5))}, ping median {ms(pctl(probe.rtt['quiet'], 0.5))}; "
            f"server RSS {rss_before:.0f} MiB"
        )
        rss: list[float] = []
        watcher = asyncio.create_task(server.watch(proc, rss))
        n = args.connections
        fuzzers = [Fuzzer(self, i, args.frames // n + (i < args.frames % n)) for i in range(n)]
        with contextlib.suppress(NotImplementedError, RuntimeError):  # kill -USR1: what each connection awaits
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.dump, fuzzers)
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(f.run()) for f in fuzzers]
        progress = asyncio.create_task(self.progress(t0))
        running = set(tasks)
        while running and not watcher.done():
            done, _ = await asyncio.wait(running | {watcher}, return_when=asyncio.FIRST_COMPLETED)
            for t in done & running:
                running.discard(t)
                exc = t.exception()
                if exc is not None and not server.dead:
                    raise exc
        for t in running:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        fuzz_s = time.perf_counter() - t0
        progress.cancel()
        print()
        rss_after = float("nan")
        if not server.dead:  # settle: the honest editor completes one more job
            await probe.call(probe.stop())
            probe.phase = "settle"
            await probe.call(probe.job())
            await asyncio.sleep(2)
            rss_after = rss_mib(proc.pid)
            await probe.call(probe.close())
        else:
            probe.running = False
        watcher.cancel()
        return Outcome(probe, rss_before, rss_after, max(rss, default=float("nan")), fuzz_s, t_start)

    async def progress(self, t0: float) -> None:
        while True:
            await asyncio.sleep(5)
            sent = sum(r.sent for k, r in self.stats.rows.items() if k in STRATEGIES)
            kills = sum(self.stats.closes.values())
            print(
                f"\r  {sent} frames in {time.perf_counter() - t0:.0f} s, {sum(self.stats.replies.values())} replies, "
                f"{kills} connections killed   ",
                end="",
                flush=True,
            )
