"""The backend under test, in its own process so its memory (``VmRSS``) is measured apart from the fuzzer's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def code_under_test() -> dict[str, Any]:
    """Which sfumato was fuzzed: the package folder, and the repository's commit and state when it is one."""
    import sfumato.protocol

    folder = Path(sfumato.protocol.__file__).resolve().parent.parent
    out: dict[str, Any] = {"protocol_package": str(Path(sfumato.protocol.__file__).parent)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(folder)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        if head.returncode == 0:  # else an exported snapshot, not a checkout
            status = subprocess.run([*git, "status", "--porcelain", "--", "protocol", "backend"], capture_output=True)
            out |= {"commit": head.stdout.strip(), "uncommitted_changes": bool(status.stdout.strip())}
    return out


class Backend:
    """``python -m sfumato.backend --port 0 --device cpu`` with a throw-away config and cache; its log is kept
    (the tail, ERROR lines, exceptions named) so a death or a swallowed exception shows in the summary."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.dead = False
        self.exit_code: int | None = None
        self.log_tail: deque[str] = deque(maxlen=40)
        self.log_errors = 0
        self.exceptions: Counter[str] = Counter()
        self.rss_samples: list[tuple[float, float]] = []

    def start(self, tmp: Path) -> subprocess.Popen[str]:
        (tmp / "config.toml").write_text("[server]\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SFUMATO_")}
        env |= {"SFUMATO_CACHE_DIR": str(tmp / "cache"), "HF_HUB_OFFLINE": "1", "XDG_CONFIG_HOME": str(tmp)}
        cmd = [sys.executable, "-m", "sfumato.backend", "--port", "0", "--device", "cpu"]
        proc = self.proc = subprocess.Popen(
            [*cmd, "--config", str(tmp / "config.toml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log_tail.append(line.rstrip())
            if line.startswith("listening on "):
                self.url = line.split()[-1]
                break
        else:
            raise SystemExit("the backend did not start:\n" + "\n".join(self.log_tail))
        threading.Thread(target=self._drain_log, args=(proc,), daemon=True).start()
        return proc

    def _drain_log(self, proc: subprocess.Popen[str]) -> None:
        exc_line = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))\b")
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            self.log_tail.append(line)
            if " ERROR " in line or " CRITICAL " in line:
                self.log_errors += 1
            m = exc_line.match(line)
            if m:
                self.exceptions[m.group(1)] += 1

    def died(self) -> bool:
        """Whether the process has exited (checked now, not only by the watcher)."""
        if not self.dead and self.proc is not None and self.proc.poll() is not None:
            self.dead, self.exit_code = True, self.proc.returncode
        return self.dead

    async def watch(self, proc: subprocess.Popen[str], rss: list[float]) -> None:
        """Notice a death at once and sample RSS every 0.25 s (the summary names the frames before each jump)."""
        while True:
            code = proc.poll()
            if code is not None:
                self.dead, self.exit_code = True, code
                return
            with contextlib.suppress(OSError):
                rss.append(rss_mib(proc.pid))
                self.rss_samples.append((time.perf_counter(), rss[-1]))
            await asyncio.sleep(0.25)

    @staticmethod
    def stop(proc: subprocess.Popen[str]) -> None:
        """SIGTERM, as a user would: a graceful shutdown must still work after the fuzzing."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
