"""One generation from start to finish, for the PDB procedures: connect, submit, land the results, return.

The main loop runs while the job does, so the network thread's events (previews, the result) land
through plugin.core's Controller on the main loop, exactly as in the window. Plain Python: GIMP
passes a GLib main loop (``glib.GLibLoop``), the host tests a small one of their own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sfumato.plugin.core.client import ConnectionChanged, Event
from sfumato.plugin.core.controller import Controller, result_layer_name
from sfumato.plugin.core.editor import DocumentLike
from sfumato.plugin.core.jobs import TrackedJob
from sfumato.protocol import Cancelled, JobError, Progress, Queued, Result, Started, Submit

from .bridge import Bridge
from .params import Request

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0  # nothing answers: say so instead of retrying forever in a batch script
LOST_TIMEOUT_S = 120.0  # the backend went away mid-job and did not come back to resume it


class MainLoop(Protocol):
    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop's thread soon; callable from any thread."""
        ...

    def every(self, seconds: float, fn: Callable[[], bool]) -> None:
        """Call ``fn`` on the loop's thread every ``seconds`` until it returns False."""
        ...

    def run(self) -> None: ...

    def quit(self) -> None: ...


@dataclass
class Outcome:
    ok: bool
    message: str  # plain words for the painter or the script's author
    layers: tuple[str, ...] = ()  # names of the layers added
    seeds: tuple[int, ...] = ()


def generate_and_wait(
    doc: DocumentLike,
    request: Request,
    loop: MainLoop,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    lost_timeout: float = LOST_TIMEOUT_S,
    on_progress: Callable[[TrackedJob], None] | None = None,
) -> Outcome:
    """Run one job on ``loop`` (the caller's thread) until it ends; the document changes only on that thread.

    ``on_progress`` sees the job after each queue move and step (GIMP's progress bar).
    """
    bridge = Bridge(loop.post)
    outcome: list[Outcome] = []
    state: dict[str, object] = {"since": time.monotonic(), "detail": ""}
    submitted: list[Submit] = []
    controller: Controller | None = None

    t0 = time.monotonic()

    def finish(result: Outcome) -> None:
        if outcome:
            return
        outcome.append(result)
        log.info("%s after %.1f s: %s", "done" if result.ok else "failed", time.monotonic() - t0, result.message)
        if submitted and controller is not None and not result.ok:
            controller.cancel(submitted[0].job_id)  # best effort: do not leave it running for nobody
            if doc.is_open():
                doc.clear_preview()
        loop.quit()

    def on_event(event: Event, job: TrackedJob | None) -> None:
        if outcome or controller is None:
            return  # late events after the end
        try:
            handle(controller, event, job)
        except Exception as exc:  # e.g. GIMP refused a layer: end the run with it rather than hang
            log.exception("sfumato: handling %s failed", type(event).__name__)
            finish(Outcome(False, f"internal error: {exc}"))

    def handle(controller: Controller, event: Event, job: TrackedJob | None) -> None:
        controller.handle(event, job)
        if isinstance(event, ConnectionChanged):
            state["detail"] = event.detail
            if event.state == "connected":
                log.info("connected to %s after %.1f s", request.server_url, time.monotonic() - t0)
                state["since"] = None
                if not submitted:
                    try:
                        submitted.append(controller.generate(doc, request.params))
                    except Exception as exc:  # the document could not be read: nothing was sent
                        finish(Outcome(False, f"could not start: {exc}"))
            elif event.state == "failed":
                finish(Outcome(False, f"the backend at {request.server_url} refused the connection: {event.detail}"))
            elif state["since"] is None:
                state["since"] = time.monotonic()
        elif job is None or job.id not in {s.job_id for s in submitted}:
            return
        elif isinstance(event, (Result, JobError, Cancelled)):
            # the event itself, not the tracked job: the network thread may already be further than this
            # event (and has let go of a finished job's pixels)
            finish(_ended(job, event, controller, doc))
        elif on_progress is not None and isinstance(event, (Queued, Started, Progress)):
            on_progress(job)

    def watch() -> bool:
        since = state["since"]
        if outcome or not isinstance(since, float):
            return not outcome
        limit = lost_timeout if submitted else connect_timeout
        if time.monotonic() - since > limit:
            what = "lost the connection to" if submitted else "cannot reach"
            finish(
                Outcome(
                    False,
                    f"{what} the Sfumato backend at {request.server_url} ({state['detail'] or 'no answer'}); "
                    "start it with ./install/start or `sfumato serve`",
                )
            )
            return False
        return True

    client = bridge.start(request.server_url, request.token, on_event)
    controller = Controller(client, bridge.schedule, job_prefix="gimp")
    loop.every(0.25, watch)
    try:
        loop.run()
    finally:
        bridge.stop()
    return outcome[0] if outcome else Outcome(False, "interrupted")


def _ended(job: TrackedJob, event: Result | JobError | Cancelled, controller: Controller, doc: DocumentLike) -> Outcome:
    if isinstance(event, Result):
        if any(k.job_id == job.id for k in controller.kept_results):
            return Outcome(False, f"the image '{doc.title()}' was closed; the result was not pasted anywhere")
        names = tuple(result_layer_name(job.submit, seed) for seed in event.seeds)
        return Outcome(True, f"{len(names)} layer(s) added: {', '.join(names)}", names, event.seeds)
    if isinstance(event, JobError):
        return Outcome(False, f"the backend could not do it ({event.code}): {event.message}")
    return Outcome(False, "the job ended as cancelled")
