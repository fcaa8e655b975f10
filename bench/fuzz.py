"""Reliability under hostile input: a real backend, ≥ 100 000 fuzzed frames, an honest editor meanwhile.

The backend runs in its own process (``python -m sfumato.backend --port 0 --device cpu``, built-in
tiny model, a temporary cache folder), so its memory is measured apart from the fuzzer's
(``VmRSS`` in ``/proc/PID/status``). Several raw websocket connections (each after a valid
``hello``) send fuzzed frames without waiting for each reply: replies are drained by a reader task
per connection and matched to the frames that require one (see the markers below). Meanwhile, in a thread with its own
event loop, an honest editor (the real ``plugin.core`` client) submits small real jobs one after
another, and a second raw client measures the server's event loop with ``get_status`` pings.

Strategies (each counted separately; the mix is fixed, the frames come from ``--seed``):

  random      random bytes (sometimes after a msgpack map header) and random text frames
  truncated   valid frames (submits, cancel, get_status, hello) cut short
  flipped     valid frames with 1–8 bytes overwritten or bits flipped
  structure   a valid submit decoded with msgpack, then: fields set to wrong types or extreme
              numbers (5e-324, -0.0, NaN, ±inf, 2^64-1, ...), fields dropped, unknown keys,
              bad/unknown/60 000-character types, newlines in strings, strings at their length
              limits, lying image sizes, zlib images with lying sizes, zlib bombs (256 MiB of
              zeros), lists of 4096 items, deep nesting, frames full of empty maps, invalid UTF-8
  wrong_type  valid messages a client may not send (welcome, result, status, ... a second hello)
  cancel      cancels of unknown job ids (random, this connection's old ids, another editor's)
  handshake   a fresh connection whose first frame is one of the above or a broken hello

Every fuzzed frame is followed by a marker, a cancel of a unique unknown job id (answered by a
``job_error``). The server answers one connection's frames in order, so the replies that arrive
before a marker's reply are that frame's; at most --window frames are in flight per connection.
A submit the server may accept is also followed by a cancel of its job, so fuzz jobs never pile up
in front of the honest editor (when the job already runs, that cancel is answered when it stops).

What counts as a crash (each listed apart in the summary):

  * the server process died;
  * the server killed a fuzz session: it closed the connection (any close the fuzzer did not
    start; 1011 means the connection handler raised), or the connection went silent: no reply
    and no close for --stall-s seconds, or for 5 s while the server answered get_status pings
    sent later (the event loop lives, this session does not). The frame that did it is the first
    one in flight; it is replayed alone on a fresh connection to confirm. The other frames in
    flight are counted as "lost", not as crashes;
  * a handshake connection closed without the fatal ``error`` the spec promises, or stayed silent;
  * a frame that requires a reply got none although its connection lived on (its marker was
    answered), or a cancel of a running job was never answered. Every frame requires a reply
    except a well-formed frame of unknown type (the spec says: skip it), as the protocol's own
    decoder, with the server's announced limits, judges it.

    python bench/fuzz.py [--frames 100000] [--seed 1] [--connections 8] [--window 4] [--record]

``--record`` writes the figures to bench/results/fuzz-cpu.json. Goals: no crash; server RSS after
the run (fuzz connections closed, one more honest job) ≤ 1.10× before (after the warm-up jobs);
the honest editor and the pings never wait for the fuzzers. ``kill -USR1`` prints what each fuzz
connection is waiting for. About 4 minutes for 100 000 frames on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

# Imported as ``bench.fuzzing`` (the name mypy gives it) from the repository root, not as ``fuzzing`` from
# this script's folder, so the summary below is type-checked against the real classes.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.fuzzing.bench import Bench, Outcome
from bench.fuzzing.figures import finite, ms, pctl
from bench.fuzzing.generator import STRATEGIES
from bench.fuzzing.server import code_under_test

RESULTS = Path(__file__).resolve().parent / "results" / "fuzz-cpu.json"


def suspects(bench: Bench, t0: float, t1: float) -> str:
    """The costliest frames (bombs and floods, then ≥ 16 KiB by size) sent from 2 s before ``t0`` until ``t1``."""
    near = sorted((f for f in bench.big_frames if t0 - 2 <= f[0] <= t1), key=lambda f: (-f[3], -f[1]))
    return "; ".join(f"{label} ({size / 1024:.0f} KiB)" for _, size, label, _ in near[:3]) or "none"


def summary(bench: Bench, out: Outcome) -> dict[str, Any]:
    """Print what the run found, crashes first, each kind apart; return the figures for --record."""
    probe, rss_before, rss_after, rss_peak, fuzz_s = out.probe, out.rss_before, out.rss_after, out.rss_peak, out.fuzz_s
    st, args, server = bench.stats, bench.args, bench.server
    rows = {k: st.rows[k] for k in [*STRATEGIES, "follow-up cancel", "(no frame in flight)"] if k in st.rows}
    frames = sum(st.rows[k].sent for k in STRATEGIES if k in st.rows)
    hs_crashes = sum(v for k, v in st.handshake.items() if k.startswith("crash"))
    dead_sessions = sum(st.closes.values())
    unanswered = sum(r.unanswered for r in rows.values())
    crashes = int(server.dead) + dead_sessions + hs_crashes + unanswered
    lat, rtt = probe.latency["fuzz"], probe.rtt["fuzz"]
    ratio = rss_after / rss_before

    print(f"\n{frames} fuzzed frames over {args.connections} connections in {fuzz_s:.0f} s ({frames / fuzz_s:.0f}/s)")
    print(f"{'strategy':18}{'sent':>8}{'need reply':>12}{'answered':>10}{'unanswered':>12}{'lost':>7}{'kills':>7}")
    for name, r in rows.items():
        print(f"{name:18}{r.sent:>8}{r.need_reply:>12}{r.answered:>10}{r.unanswered:>12}{r.lost:>7}{r.kills:>7}")
        for mutation, count in r.killers.most_common(6):
            print(f"{'':20}killed by {count}× {mutation}")
    started = sorted(((min(e, time.perf_counter()) - b, j) for j, (b, e) in bench.fuzz_jobs.items()), reverse=True)
    longest = f" (longest {started[0][0]:.1f} s: {bench.job_labels[started[0][1]]})" if started else ""
    print(f"fuzz jobs the server accepted and started before their cancel arrived: {len(started)}{longest}")
    print(f"replies received on fuzz connections: {sum(st.replies.values())} ({dict(st.replies.most_common(8))})")
    print(
        f"follow-up cancels (after submits the server may accept): {st.rows['follow-up cancel'].sent}; "
        f"killer frames replayed alone: {st.replayed}"
    )
    print(
        "handshake connections: "
        + ", ".join(f"{v} {k}" for k, v in st.handshake.most_common())
        + "".join(f"\n    {v}× {k}" for k, v in st.handshake_crashes.most_common(6))
    )
    replays = Counter(str(k.get("replay")) for k in st.kills if "replay" in k)
    print(
        f"fuzz connections killed by the server: {dead_sessions}"
        + "".join(f"\n    {v}× {k}" for k, v in st.closes.most_common())
        + (f"\n    the killer frame replayed alone: {dict(replays)}" if replays else "")
    )
    if bench.unanswered:
        common = Counter(bench.unanswered).most_common(5)
        print("unanswered on live connections: " + "; ".join(f"{v}× {k}" for k, v in common))
    if st.decoder_raised:
        print(f"the protocol decoder itself raised (not a ProtocolError): {dict(st.decoder_raised)}")
    print(
        f"server log: {server.log_errors} ERROR lines; exceptions named: "
        f"{dict(server.exceptions.most_common(8)) or 'none'}"
    )
    if server.dead:
        print(f"THE SERVER DIED (exit code {server.exit_code}); last lines:\n  " + "\n  ".join(server.log_tail))
    print(
        f"CRASHES: {crashes} = server died {int(server.dead)} + fuzz connections the server closed or "
        f"left silent {dead_sessions} + handshake without a fatal error {hs_crashes} + frames unanswered on a live "
        f"connection {unanswered}   goal 0"
    )
    quiet_lat, quiet_rtt = probe.latency["quiet"], probe.rtt["quiet"]
    print(
        f"honest editor: {len(lat)} jobs during the fuzzing, median {ms(pctl(lat, 0.5))}, "
        f"p95 {ms(pctl(lat, 0.95))}, worst "
        f"{ms(max(lat, default=float('nan')))} (quiet median {ms(pctl(quiet_lat, 0.5))} → "
        f"{pctl(lat, 0.5) / pctl(quiet_lat, 0.5):.2f}×); failed {dict(probe.failures) or 0}; "
        f"disconnects {probe.disconnects}"
    )
    if probe.intervals["fuzz"]:
        t0, t1 = max(probe.intervals["fuzz"], key=lambda iv: iv[1] - iv[0])
        overlap = sorted(
            ((min(end, t1) - max(start, t0), jid) for jid, (start, end) in bench.fuzz_jobs.items()),
            reverse=True,
        )
        ran = [f"{jid} ({bench.job_labels[jid]}) for {d:.1f} s" for d, jid in overlap[:3] if d > 0.05]
        worst_note = "; ".join(ran) or "none seen (jobs of killed sessions are not seen)"
        print(f"    fuzz jobs running during the honest editor's worst job: {worst_note}")
        print(f"    large frames sent shortly before or during it: {suspects(bench, t0, t1)}")
        print(f"    its time went: {probe.worst_split.get('fuzz') or 'unknown'}")
    print(
        f"get_status pings: {len(rtt)}, median {ms(pctl(rtt, 0.5))}, p99 {ms(pctl(rtt, 0.99))}, worst "
        f"{ms(max(rtt, default=float('nan')))} (quiet median {ms(pctl(quiet_rtt, 0.5))}); "
        f"{sum(x > 1 for x in rtt)} over 1 s"
    )
    if probe.ping_intervals["fuzz"]:
        t0, t1 = max(probe.ping_intervals["fuzz"], key=lambda iv: iv[1] - iv[0])
        print(f"    large frames sent shortly before or during the worst ping: {suspects(bench, t0, t1)}")
    steps = sorted(
        ((b[1] - a[1], a[0], b[0]) for a, b in zip(server.rss_samples, server.rss_samples[1:])), reverse=True
    )
    growth = [(round(grew), suspects(bench, t0, t1)) for grew, t0, t1 in steps[:3] if grew >= 16]
    for grew, frames_before in growth:
        print(f"    server RSS grew {grew} MiB within 0.25 s after: {frames_before}")
    print(
        f"server RSS: before {rss_before:.0f} MiB, after {rss_after:.0f} MiB → {ratio:.3f}×   goal ≤ 1.10; "
        f"peak during the fuzzing {rss_peak:.0f} MiB"
    )
    return {
        "command": "python bench/fuzz.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "code": code_under_test() | ({"label": args.label} if args.label else {}),
        "frames": frames,
        "seed": args.seed,
        "connections": args.connections,
        "window": args.window,
        "fuzz_seconds": round(fuzz_s, 1),
        "total_seconds": round(time.perf_counter() - out.t_start, 1),
        "strategies": {
            k: {
                "sent": r.sent,
                "need_reply": r.need_reply,
                "answered": r.answered,
                "unanswered": r.unanswered,
                "lost_with_killed_connection": r.lost,
                "connections_killed_confirmed": r.kills,
                "killed_by": dict(r.killers.most_common()),
            }
            for k, r in rows.items()
        },
        "replies": dict(st.replies),
        "crashes": {
            "total": crashes,
            "server_died": server.dead,
            "server_exit_code": server.exit_code,
            "fuzz_connections_killed": dict(st.closes),
            "handshake_without_fatal_error": hs_crashes,
            "unanswered_on_live_connection": unanswered,
            "unanswered_frames": dict(Counter(bench.unanswered).most_common()),
        },
        "kills": st.kills[:50],
        "handshake": dict(st.handshake),
        "handshake_crashes": dict(st.handshake_crashes),
        "decoder_raised": dict(st.decoder_raised),
        "server_log": {"error_lines": server.log_errors, "exceptions": dict(server.exceptions)},
        "honest_editor": {
            "jobs": len(lat),
            "median_s": pctl(lat, 0.5),
            "p95_s": pctl(lat, 0.95),
            "worst_s": max(lat, default=None),
            "quiet_median_s": pctl(quiet_lat, 0.5),
            "worst_job_split": probe.worst_split.get("fuzz", ""),
            "failed": dict(probe.failures),
            "disconnects": probe.disconnects,
        },
        "pings": {
            "count": len(rtt),
            "median_s": pctl(rtt, 0.5),
            "p99_s": pctl(rtt, 0.99),
            "worst_s": max(rtt, default=None),
            "quiet_median_s": pctl(quiet_rtt, 0.5),
            "over_1s": sum(x > 1 for x in rtt),
        },
        "rss_mib": {
            "before": rss_before,
            "after": rss_after,
            "ratio": ratio,
            "peak_during": rss_peak,
            "largest_steps": growth,
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=100_000, help="fuzzed frames to send (default 100000)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--connections", type=int, default=8, help="concurrent fuzz connections (default 8)")
    p.add_argument("--window", type=int, default=4, help="unanswered frames allowed per connection (default 4)")
    p.add_argument("--stall-s", type=float, default=20.0, help="no reply for this long = a stalled connection")
    p.add_argument("--label", default="", help="a note kept in the recorded figures (e.g. which commit was fuzzed)")
    p.add_argument("--record", action="store_true", help="write the figures to bench/results/fuzz-cpu.json")
    args = p.parse_args()
    figures = asyncio.run(Bench(args).run(summary))
    if args.record:
        RESULTS.write_text(json.dumps(finite(figures), indent=1, default=str, allow_nan=False) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
