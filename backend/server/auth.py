"""The token check at the door: constant-time comparison, every failure logged, repeated failures slowed.

A peer (an IP address) that keeps presenting wrong tokens waits longer and longer before it hears
the answer, so guessing is slow; one that stops failing is forgotten after ``FORGET_AFTER_S``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

from sfumato.protocol import ErrorCode, ProtocolError

log = logging.getLogger(__name__)

FREE_FAILURES = 3  # honest typos are answered at once
MAX_DELAY_S = 30.0
FORGET_AFTER_S = 600.0
MAX_PEERS = 10_000  # a bound on the bookkeeping itself


class Gate:
    def __init__(self, token: str | None) -> None:
        self.token = token or ""
        self._failures: dict[str, tuple[int, float]] = {}  # peer → (count, time of the last failure)

    def delay_for(self, peer: str) -> float:
        count, last = self._failures.get(peer, (0, 0.0))
        if time.monotonic() - last > FORGET_AFTER_S:
            return 0.0
        return min(MAX_DELAY_S, 0.5 * 2 ** (count - FREE_FAILURES)) if count > FREE_FAILURES else 0.0

    async def check(self, peer: str, presented: str | None) -> None:
        """Return if the token is right (or none is needed); otherwise log, slow down and raise."""
        if not self.token:
            return
        delay = self.delay_for(peer)
        if delay:
            await asyncio.sleep(delay)  # throttling a guesser, not synchronisation
        if hmac.compare_digest((presented or "").encode(), self.token.encode()):
            self._failures.pop(peer, None)
            return
        count = self._record_failure(peer)
        if count <= FREE_FAILURES or count % 10 == 0:
            log.warning("wrong or missing token from %s (%d failures in a row)", peer, count)
        raise ProtocolError("wrong or missing token", "hello.token", ErrorCode.UNAUTHORIZED)

    def _record_failure(self, peer: str) -> int:
        now = time.monotonic()
        count, last = self._failures.get(peer, (0, 0.0))
        count = 1 if now - last > FORGET_AFTER_S else count + 1
        if len(self._failures) >= MAX_PEERS and peer not in self._failures:
            oldest = min(self._failures, key=lambda p: self._failures[p][1])
            del self._failures[oldest]
        self._failures[peer] = (count, now)
        return count
