"""One fuzz connection: sends its generator's frames, settles replies in its ledger, tells a crash from a refusal."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING, Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sfumato.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    DecodeLimits,
    GetStatus,
    Hello,
    ProtocolError,
    Submit,
    Unknown,
    Welcome,
    decode,
    encode,
)

from .generator import Frame, Generator
from .ledger import FINAL, InFlight, Ledger
from .stats import Stats

if TYPE_CHECKING:
    from .bench import Bench


def decode_limits(welcome: Welcome) -> DecodeLimits:
    """The server's decoder limits, as far as the welcome and the server's own constants tell them."""
    announced = welcome.limits
    wanted: dict[str, Any] = {
        "max_message_bytes": announced.max_message_bytes,
        "max_pixels": announced.max_pixels,
        "max_batch": announced.max_batch,
        "max_controls": announced.max_controls,
    }
    with contextlib.suppress(ImportError):
        from sfumato.backend.server import hub

        if hasattr(hub, "CLIENT_FRAME_MAX_OBJECTS"):
            wanted["max_objects"] = hub.CLIENT_FRAME_MAX_OBJECTS
    known = {f.name for f in dataclasses.fields(DecodeLimits)}
    return DecodeLimits(**{k: v for k, v in wanted.items() if k in known})


class Fuzzer:
    """Sends up to --window frames ahead and never waits for a reply to send, so the server is kept busy."""

    def __init__(self, bench: Bench, index: int, quota: int) -> None:
        self.b, self.index, self.quota = bench, index, quota
        self.gen = Generator(bench.seeds, bench.args.seed, index)
        self.ws: ClientConnection | None = None
        self.ledger = Ledger()
        self.reader: asyncio.Task[None] | None = None
        self.seq = 0
        self.limits = DecodeLimits()

    @property
    def stats(self) -> Stats:
        return self.b.stats

    async def open(self) -> tuple[ClientConnection, Welcome]:
        ws = await connect(self.b.url, max_size=None, compression=None, ping_interval=None, open_timeout=60)
        await ws.send(encode(Hello(version=PROTOCOL_VERSION, client=f"fuzz-{self.index}", kind="test")))
        while True:
            msg = decode(await asyncio.wait_for(ws.recv(), 60), self.b.big)
            if isinstance(msg, Welcome):
                return ws, msg

    async def connect(self) -> None:
        self.ws, welcome = await self.open()
        self.limits = decode_limits(welcome)
        self.ledger = Ledger()
        self.reader = asyncio.create_task(self.read(self.ws, self.ledger))

    async def read(self, ws: ClientConnection, ledger: Ledger) -> None:
        try:
            async for raw in ws:
                try:
                    reply = msgpack.unpackb(raw)
                except Exception:
                    reply = None
                if not isinstance(reply, dict):
                    self.stats.replies["<not a msgpack map>"] += 1
                    continue
                kind = str(reply.get("type"))
                self.stats.replies[kind] += 1
                if kind == "error" and reply.get("fatal"):
                    self.stats.replies["error (fatal)"] += 1
                if kind in ("started", *FINAL):
                    self.b.job_event(kind, reply.get("job_id"))
                for f, row, outcome in ledger.on_reply(reply):
                    self.settled(f, row, outcome)
                ledger.changed.set()
        except ConnectionClosed:
            pass
        finally:
            ledger.closed = True
            ledger.changed.set()

    def settled(self, f: InFlight, row: str, outcome: str) -> None:
        if outcome == "answered":
            self.stats.rows[row].answered += 1
        else:
            self.stats.rows[row].unanswered += 1
            self.b.unanswered.append(f"{row}: {f.mutation}" if row == f.strategy else f"{row} after {f.mutation}")

    def predict(self, frame: Frame) -> tuple[str, str | None]:
        """What the protocol's own decoder makes of ``frame``: its kind and the job id it names."""
        if frame.expect is not None:  # a frame too costly to decode here; the server may accept it
            return "submit", frame.expect[1]
        data: Any = frame.data
        try:
            msg = decode(data, self.limits)
        except ProtocolError as exc:
            return "other", getattr(exc, "job_id", None)
        except Exception as exc:  # the decoder itself is broken: the server must still answer
            self.stats.decoder_raised[type(exc).__name__] += 1
            return "other", None
        if isinstance(msg, Unknown):
            return "silent", None
        if isinstance(msg, Submit):
            return "submit", msg.job_id
        if isinstance(msg, Cancel):
            return "cancel", msg.job_id
        return ("status" if isinstance(msg, GetStatus) else "other"), None

    async def run(self) -> None:
        try:
            await self.connect()
            for _ in range(self.quota):
                if self.b.dead():
                    return
                frame = self.gen.next()
                self.stats.rows[frame.strategy].sent += 1
                if frame.strategy == "handshake":
                    await self.handshake(frame)
                    continue
                await self.send(frame)
            await self.finish()
        except (OSError, ConnectionClosed, asyncio.TimeoutError):
            if not self.b.dead():  # a connect or a handshake failed although the server lives
                raise

    async def send(self, frame: Frame) -> None:
        ledger = self.ledger
        while len(ledger.inflight) >= self.b.args.window and not ledger.closed:
            ledger.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ledger.changed.wait(), 1.0)
            how = self.silence(ledger)
            if how:
                await self.dead(how)
                ledger = self.ledger
        if ledger.closed:
            await self.dead("")
            ledger = self.ledger
        kind, own_id = self.predict(frame)
        self.seq += 1
        f = InFlight(self.seq, frame.strategy, frame.mutation, frame.data, kind, own_id, f"m{self.index}.{self.seq}")
        if len(frame.data) >= 16384 or frame.expect is not None:
            label = f"{frame.strategy}: {frame.mutation}"
            self.b.big_frames.append((f.sent_at, len(frame.data), label, frame.expect is not None))
        if kind != "silent":
            self.stats.rows[frame.strategy].need_reply += 1
        if kind == "submit":
            assert own_id is not None
            self.b.job_labels[own_id] = f"{frame.strategy}: {frame.mutation}"
            self.stats.rows["follow-up cancel"].sent += 1
            self.stats.rows["follow-up cancel"].need_reply += 1
        ledger.inflight.append(f)
        assert self.ws is not None
        try:
            await self.ws.send(frame.data)
            if kind == "submit":
                await self.ws.send(encode(Cancel(job_id=own_id)))
            await self.ws.send(encode(Cancel(job_id=f.marker)))
        except ConnectionClosed:
            await self.dead("")

    def silence(self, ledger: Ledger) -> str:
        """Why this open connection counts as dead, or "" while it may still answer."""
        if ledger.closed or not ledger.inflight:
            return ""
        since = max(ledger.progress, ledger.inflight[0].sent_at)
        quiet = time.perf_counter() - since
        if quiet >= self.b.args.stall_s:
            return f"went silent (no reply, no close for {self.b.args.stall_s:.0f} s)"
        if quiet >= 5 and self.b.probe.ping_answered_sent_at > since + 1:
            return "went silent (no reply for 5 s while the server answered later pings)"
        return ""

    async def dead(self, how: str) -> None:
        """The server closed this connection (``how`` empty) or left it silent: the frame in flight
        first did it (replies come in order). Record it, replay that frame alone, reconnect."""
        ws, ledger = self.ws, self.ledger
        assert ws is not None
        if how:
            await self.close()
        elif self.reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.reader, 15)
        if not how:
            code = ws.close_code if ws.close_code is not None else 1006
            how = f"closed with code {code}" + (f" ({ws.close_reason})" if ws.close_reason else "")
        self.stats.closes[how] += 1
        event: dict[str, Any] = {"how": how, "in_flight": len(ledger.inflight)}
        killer = ledger.inflight.popleft() if ledger.inflight else None
        for f in ledger.inflight:
            if f.kind != "silent":
                self.stats.rows[f.strategy].lost += 1
            if f.kind == "submit":
                self.stats.rows["follow-up cancel"].lost += 1
        for waiting in ledger.awaiting.values():
            for _, name in waiting:
                self.stats.rows[name].lost += 1
        if killer is None:
            self.stats.rows["(no frame in flight)"].kills += 1
        else:
            if killer.kind == "submit":
                self.stats.rows["follow-up cancel"].lost += 1
            row = self.stats.rows[killer.strategy]
            row.kills += 1
            row.killers[killer.mutation] += 1
            frame = killer.frame.encode() if isinstance(killer.frame, str) else killer.frame
            event |= {"strategy": killer.strategy, "mutation": killer.mutation, "replay": await self.replay(killer)}
            event["frame_hex"] = frame[:160].hex() + ("..." if len(frame) > 160 else "")
        self.stats.kills.append(event)
        if not self.b.dead():
            await self.connect()

    async def replay(self, f: InFlight) -> str:
        """Send the frame again, alone on a fresh connection: does it do the same?"""
        if self.b.dead():
            return ""
        self.stats.replayed += 1
        ws, _ = await self.open()
        try:
            await ws.send(f.frame)
            if f.kind == "submit" and f.own_id:
                await ws.send(encode(Cancel(job_id=f.own_id)))
            await ws.send(encode(Cancel(job_id=f.marker)))
            await asyncio.wait_for(self.until_marker(ws, f.marker), 15)
            return "answered normally (not reproduced)"
        except ConnectionClosed:
            return f"closed with code {ws.close_code if ws.close_code is not None else 1006}"
        except asyncio.TimeoutError:
            return "went silent for 15 s"
        finally:
            await ws.close()

    @staticmethod
    async def until_marker(ws: ClientConnection, marker: str) -> None:
        while True:
            reply = msgpack.unpackb(await ws.recv())
            if isinstance(reply, dict) and reply.get("job_id") == marker and reply.get("type") == "job_error":
                return

    async def close(self) -> None:
        ledger = self.ledger
        ledger.closed = True
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(BaseException):
                await self.reader

    async def finish(self) -> None:
        """Wait for the last markers, then up to 15 s for cancels of running jobs; what is left is unanswered."""
        for wait_s, done in ((120.0, lambda lg: not lg.inflight), (15.0, lambda lg: not lg.awaiting)):
            deadline = time.monotonic() + wait_s
            while not done(self.ledger) and time.monotonic() < deadline and not self.b.dead():
                ledger = self.ledger
                ledger.changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ledger.changed.wait(), 1.0)
                how = "" if ledger.closed else self.silence(ledger)
                if ledger.closed or how:
                    await self.dead(how)
        for f in self.ledger.inflight:
            self.settled(f, f.strategy, "unanswered")
        for waiting in self.ledger.awaiting.values():
            for f, row in waiting:
                self.settled(f, row, "unanswered")
        await self.close()

    async def handshake(self, frame: Frame) -> None:
        """A fresh connection whose first frame is ``frame``: a fatal ``error`` and a close are required."""
        got_fatal = welcomed = False
        outcome = ""
        try:
            ws = await connect(self.b.url, max_size=None, compression=None, ping_interval=None, open_timeout=60)
        except Exception as exc:
            self.stats.handshake[f"could not connect: {type(exc).__name__}"] += 1
            return
        try:
            await ws.send(frame.data)

            async def read() -> None:
                nonlocal got_fatal, welcomed
                async for raw in ws:
                    reply = msgpack.unpackb(raw)
                    if isinstance(reply, dict) and reply.get("type") == "error" and reply.get("fatal"):
                        got_fatal = True
                    if isinstance(reply, dict) and reply.get("type") == "welcome":
                        welcomed = True
                        await ws.close()

            await asyncio.wait_for(read(), 15)
        except asyncio.TimeoutError:
            outcome = "crash: no answer within 15 s"
        except ConnectionClosed:
            pass
        finally:
            await ws.close()
        code = ws.close_code
        if not outcome:
            if welcomed:
                outcome = "welcomed (the frame was a valid hello)"
            elif code == 1011:
                outcome = "crash: closed with 1011"
            elif got_fatal:
                outcome = "refused with a fatal error"
            else:
                outcome = f"crash: closed ({code}) without an error"
        self.stats.handshake[outcome] += 1
        if outcome.startswith("crash"):
            self.stats.handshake_crashes[f"{outcome[7:]} ← {frame.mutation}"] += 1
