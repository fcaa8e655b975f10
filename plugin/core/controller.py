"""Editor-neutral behaviour: what Generate does, and where every job event lands.

* no selection → restyle the active layer; a selection → inpaint it (see ``requests``); Expand → fill
  the border added to the canvas (see ``expand``);
* previews go to the job's own document's preview layer; the result becomes a new layer there;
* a result whose document was closed is kept (``kept_results``) and reported, never pasted elsewhere.

Runs on the GUI thread. Talking to the backend goes through ``schedule`` (which runs a coroutine on
the network loop), so the GUI never waits on the network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sfumato.protocol import Cancelled, JobError, Progress, Rect, Result, Submit

from .client import Client, ConnectionChanged
from .editor import DocumentLike, EnlargingDocument, GrowingDocument
from .expand import Margins, build_expand, refuse_empty
from .jobs import TrackedJob
from .requests import GenerationParams, build_submit, new_job_id
from .upscale import build_upscale

if TYPE_CHECKING:
    from .live import LivePainting

log = logging.getLogger(__name__)

Schedule = Callable[[Coroutine[Any, Any, Any]], object]


@dataclass
class KeptResult:
    job_id: str
    document_title: str
    result: Result
    reason: str


def result_layer_name(submit: Submit, seed: int) -> str:
    prompt = " ".join(submit.prompt.split())
    if len(prompt) > 48:
        prompt = prompt[:47] + "…"
    return f"{prompt or submit.task} [seed {seed}]"


class Controller:
    def __init__(
        self, client: Client, schedule: Schedule, on_change: Callable[[], None] | None = None, job_prefix: str = "job"
    ) -> None:
        self.client, self.schedule = client, schedule
        self.on_change = on_change or (lambda: None)
        self.job_prefix = job_prefix
        self.documents: dict[str, DocumentLike] = {}
        self.kept_results: list[KeptResult] = []
        self.messages: list[str] = []  # plain-words notes for the painter, newest last
        self.connection = ConnectionChanged("disconnected")
        self.live: LivePainting | None = None  # set while a document paints live (plugin/core/live.py)

    # ------------------------------------------------------------------ actions

    def generate(self, doc: DocumentLike, params: GenerationParams) -> Submit:
        return self._send(doc, build_submit(doc, params, new_job_id(self.job_prefix)))

    def expand(self, doc: GrowingDocument, params: GenerationParams, margins: Margins) -> Submit:
        """Grow ``doc``'s canvas by ``margins``, then fill the new border (one generation).

        Raises ``ValueError`` before the canvas changes when no side is ticked."""
        refuse_empty(margins)
        doc.grow(margins)
        return self._send(doc, build_expand(doc, margins, params, new_job_id(self.job_prefix)))

    def upscale(
        self, doc: EnlargingDocument, params: GenerationParams, factor: int, upscaler: str | None, strength: float
    ) -> Submit:
        """Enlarge the active layer ×``factor`` into a new document (plugin/core/upscale.py)."""
        return self._send(doc, build_upscale(doc, params, factor, upscaler, strength, new_job_id(self.job_prefix)))

    def _send(self, doc: DocumentLike, submit: Submit) -> Submit:
        self.documents[submit.job_id] = doc
        self.schedule(self.client.submit(submit, doc))
        self.on_change()
        return submit

    def cancel(self, job_id: str | None = None) -> list[str]:
        """Cancel one job, or every unfinished job of this editor."""
        ids = [job_id] if job_id else [j.id for j in self.client.tracker.active()]
        for jid in ids:
            self.schedule(self.client.cancel(jid))
        return ids

    def active_jobs(self) -> list[TrackedJob]:
        return self.client.tracker.active()

    # ------------------------------------------------------------------ events (GUI thread)

    def handle(self, event: Any, job: TrackedJob | None) -> None:
        if isinstance(event, ConnectionChanged):
            self.connection = event
        elif job is not None and job.submit.live:
            if self.live is not None:  # live jobs show in the preview layer until Apply
                self.live.handle(event, job)
        elif job is not None:
            doc = self.documents.get(job.id)
            if (
                isinstance(event, Progress)
                and event.preview is not None
                and not job.state.finished  # its result came meanwhile (the network thread runs ahead)
                and doc is not None
                and doc.is_open()
                and job.submit.task != "upscale"  # an upscale's previews are tiles of a bigger picture
            ):
                doc.show_preview(event.preview, self._result_rect(job.submit))
            elif isinstance(event, Result):
                self._land(job, event, doc)
            elif isinstance(event, (Cancelled, JobError)):
                if doc is not None and doc.is_open():
                    doc.clear_preview()
                if isinstance(event, JobError):
                    self.messages.append(f"{job.id}: {event.message}")
                self.documents.pop(job.id, None)
        self.on_change()

    def _land(self, job: TrackedJob, result: Result, doc: DocumentLike | None) -> None:
        self.documents.pop(job.id, None)
        if doc is None or not doc.is_open():
            title = doc.title() if doc is not None else "?"
            self.kept_results.append(KeptResult(job.id, title, result, "its document was closed"))
            self.messages.append(f"{job.id}: the document '{title}' was closed; the result is kept")
            return
        doc.clear_preview()
        for image, seed in zip(result.images, result.seeds):
            if job.submit.task == "upscale":  # a bigger picture: a document of its own (plugin/core/upscale.py)
                cast(EnlargingDocument, doc).open_enlarged(image, result_layer_name(job.submit, seed))
            else:
                doc.insert_result(image, result.rect, result_layer_name(job.submit, seed))

    @staticmethod
    def _result_rect(submit: Submit) -> Rect:
        return submit.result or submit.image_rect
