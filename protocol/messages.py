"""Every message of protocol v1: one frozen dataclass each, validated on construction.

On the wire a message is a msgpack map with a ``"type"`` key plus the fields below. SPEC.md
documents each one; ``tests/test_spec.py`` keeps the two in step.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from .defaults import (
    DEFAULT_GUIDANCE,
    DEFAULT_PREVIEWS_PER_SECOND,
    DEFAULT_REFERENCE_MODE,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    MAX_CONTROL_STRENGTH,
    MAX_REFERENCE_WEIGHT,
    MAX_STEPS,
    REFERENCE_MODES,
    REFERENCE_SIDE,
    SCHEDULERS,
)
from .errors import ErrorCode, InvalidMessage
from .images import Image, ImageKind, PixelFormat
from .regions import Point, Rect
from .schema import Bool, Float, Int, ListOf, Nested, Optional, Record, Str, Timings, wire
from .states import JobState

PROTOCOL_VERSION = (1, 7)  # 1.1: error.job_id, image.linear, nil means absent; 1.2: buffer frames; 1.3: LoRAs, VAEs;
# 1.4: devices in welcome and status, the worker_failed code; 1.5: the upscale task, upscaler models;
# 1.6: reference images (IP-Adapter), ipadapter and clip_vision models; live jobs (submit.live) and the
# supersede rule (cancelled.superseded_by); 1.7: a buffer may travel as several frames (chunks)

MAX_TYPE_CHARS = 64  # a message type longer than this is a bad frame, not an unknown type

JOB_ID = Str(1, 64, pattern=r"[A-Za-z0-9_.:\-]+")
SEED = Int(0, (1 << 32) - 1)
TASKS = ("img2img", "inpaint", "upscale")
CONTROL_TYPES = ("canny", "depth", "lineart", "pose", "scribble", "softedge", "tile")
FILL_MODES = ("auto", "none", "neutral", "blur", "original")
CLIENT_KINDS = ("krita", "gimp", "cli", "test", "other")
JOB_STATES = tuple(state.value for state in JobState)
MODEL_KINDS = (
    *("checkpoint", "controlnet", "lora", "embedding", "vae", "unusable", "upscaler"),
    *("ipadapter", "clip_vision"),
)
# before 1.3: the first two; before 1.5: no upscaler; before 1.6: no ipadapter, clip_vision
UPSCALE_FACTORS = (2, 4)
MAX_LORAS = 16
WORKER_STATES = ("idle", "running", "starting")  # starting: a replacement for a worker that failed
MAX_DEVICES = 64
MAX_REFERENCES = 4  # submit.references: each one loads its IP-Adapter once more for the job
MAX_REFERENCE_SIDE = 1024  # px; editors send less (shorter side REFERENCE_SIDE): the image encoders see 224²


def reference_size(width: int, height: int) -> tuple[int, int]:
    """The size a reference image travels at: shorter side ``REFERENCE_SIDE``, longer at most
    ``MAX_REFERENCE_SIDE`` (never enlarged). Editors and the A1111 API scale by it."""
    scale = min(1.0, REFERENCE_SIDE / min(width, height), MAX_REFERENCE_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def arch_family(arch: str) -> str:
    """``sd15-inpaint`` → ``sd15``: what a LoRA, an embedding or a ControlNet must share with a checkpoint."""
    return arch.split("-")[0]


class Message(Record):
    """A top-level message. ``TYPE`` is its wire name."""

    TYPE: ClassVar[str] = ""


# --------------------------------------------------------------------------- nested records


@dataclasses.dataclass(frozen=True)
class Limits(Record):
    PATH = "limits"
    max_message_bytes: int = wire(Int(1024, 1 << 30), "largest frame accepted, bytes")
    max_pixels: int = wire(Int(1, 1 << 26), "largest image accepted, width × height")
    max_batch: int = wire(Int(1, 64), "largest batch_size")
    max_queued_per_editor: int = wire(Int(1, 10_000), "jobs one editor may have queued or running")
    max_controls: int = wire(Int(0, 16), "ControlNet controls per job")


@dataclasses.dataclass(frozen=True)
class ModelInfo(Record):
    PATH = "model"
    id: str = wire(Str(1, 256), "catalogue id, used in submit.model / control.model")
    kind: str = wire(
        Str(choices=MODEL_KINDS),
        "before 1.3 only checkpoint and controlnet; upscaler since 1.5; ipadapter, clip_vision since 1.6",
    )
    arch: str = wire(Str(1, 32), "sd15, sdxl, ... or unknown; for LoRAs and embeddings the family they fit")
    label: str = wire(Str(0, 256), "human-readable name")
    native_size: int = wire(Int(0, 8192), "side of the native square resolution, px (0 = n/a)", default=0)
    control_type: str | None = wire(Optional(Str(1, 32)), "for controlnets: canny, depth, ...", default=None)
    test: bool = wire(Bool(), "a built-in test model with random weights", default=False)
    size_bytes: int = wire(Int(0, 1 << 50), "size on disk (since 1.3; 0 = unknown)", default=0)
    problem: str = wire(Str(0, 1000), "why it cannot be used (since 1.3, kind unusable); empty when usable", default="")


@dataclasses.dataclass(frozen=True)
class DeviceStatus(Record):
    """One worker of the backend (since 1.4): the device it runs jobs on, and what it does now."""

    PATH = "device"
    device: str = wire(Str(1, 128), "e.g. cuda:1 (NVIDIA H200), cpu")
    state: str = wire(Str(choices=WORKER_STATES), "starting: replacing a worker that failed")
    loaded_models: tuple[str, ...] = wire(ListOf(Str(1, 256), 0, 64), "models held on this device", default=())


@dataclasses.dataclass(frozen=True)
class LoraWeight(Record):
    """One LoRA of a job (since 1.3), applied to this job only."""

    PATH = "lora"
    id: str = wire(Str(1, 256), "lora catalogue id")
    weight: float = wire(Float(-4.0, 4.0), "0 = no effect, 1 = as trained", default=1.0)


@dataclasses.dataclass(frozen=True)
class Control(Record):
    """One ControlNet control of a job."""

    PATH = "control"
    type: str = wire(Str(choices=CONTROL_TYPES), "what the control image means")
    image: Image = wire(ImageKind((PixelFormat.RGBA8, PixelFormat.GRAY8)), "same size as submit.image")
    preprocess: bool = wire(Bool(), "true: extract the map from image; false: image already is the map", default=True)
    model: str | None = wire(Optional(Str(1, 256)), "controlnet catalogue id; nil picks one by type", default=None)
    strength: float = wire(Float(0.0, MAX_CONTROL_STRENGTH), "conditioning scale", default=1.0)
    start: float = wire(Float(0.0, 1.0), "fraction of the schedule where the control starts", default=0.0)
    end: float = wire(Float(0.0, 1.0), "fraction of the schedule where it ends", default=1.0)

    def validate(self) -> None:
        if not self.start < self.end:  # an empty window would make the control do nothing at all
            raise InvalidMessage(
                f"expected start < end, got start {self.start} and end {self.end}",
                self._path("end"),
                ErrorCode.INVALID_REQUEST,
            )


@dataclasses.dataclass(frozen=True)
class PreviewSettings(Record):
    PATH = "preview"
    enabled: bool = wire(Bool(), default=True)
    max_per_second: float = wire(
        Float(0.0, 30.0), "previews per second at most; 0 = none", default=DEFAULT_PREVIEWS_PER_SECOND
    )
    max_size: int = wire(Int(16, 1024), "longest side of a preview image, px", default=256)


@dataclasses.dataclass(frozen=True)
class InpaintOptions(Record):
    """Mask shaping; nil means automatic, relative to the selection size."""

    PATH = "inpaint"
    grow: int | None = wire(Optional(Int(0, 1024)), "px the denoise mask grows beyond the selection", default=None)
    feather: int | None = wire(Optional(Int(0, 1024)), "px of blur on the denoise mask", default=None)
    blend: int | None = wire(Optional(Int(0, 1024)), "px of the seam ramp inside the selection", default=None)
    fill: str = wire(Str(choices=FILL_MODES), "what the masked area holds before denoising", default="auto")


@dataclasses.dataclass(frozen=True)
class UpscaleOptions(Record):
    """How an upscale job enlarges the image (since 1.5); submit.strength is the refine strength."""

    PATH = "upscale"
    factor: int = wire(Int(2, 4), "2 or 4: the result is this many times wider and taller", default=2)
    upscaler: str | None = wire(Optional(Str(1, 256)), "upscaler catalogue id; nil = Lanczos resampling", default=None)
    tile: int | None = wire(
        Optional(Int(64, 4096)), "side of a refine tile, px; nil = the checkpoint's native size", default=None
    )
    overlap: int | None = wire(
        Optional(Int(0, 2048)), "px shared by neighbouring tiles, blended; nil = tile / 8", default=None
    )

    def validate(self) -> None:
        if self.factor not in UPSCALE_FACTORS:
            raise InvalidMessage(f"expected a factor of 2 or 4, got {self.factor}", self._path("factor"))
        if self.tile is not None and self.overlap is not None and not self.overlap * 2 < self.tile:
            raise InvalidMessage(
                f"expected an overlap under half the tile ({self.tile}), got {self.overlap}", self._path("overlap")
            )


@dataclasses.dataclass(frozen=True)
class Reference(Record):
    """A reference image of a job (since 1.6), applied through an IP-Adapter: its look, its layout, or both."""

    PATH = "reference"
    image: Image = wire(
        ImageKind((PixelFormat.RGBA8,)),
        f"at most {MAX_REFERENCE_SIDE} px a side; editors scale its shorter side down to {REFERENCE_SIDE}",
    )
    weight: float = wire(
        Float(0.0, MAX_REFERENCE_WEIGHT), "0 = no effect (the reference is dropped), 1 = as trained", default=1.0
    )
    mode: str = wire(
        Str(choices=REFERENCE_MODES),
        "style: the look without the content; composition: the layout; full: both",
        default=DEFAULT_REFERENCE_MODE,
    )
    adapter: str | None = wire(
        Optional(Str(1, 256)), "ipadapter catalogue id; nil picks one that fits the checkpoint", default=None
    )

    def validate(self) -> None:
        side = max(self.image.width, self.image.height)
        if side > MAX_REFERENCE_SIDE:
            raise InvalidMessage(
                f"expected a reference image of at most {MAX_REFERENCE_SIDE} px a side, got {side}: scale it down",
                self._path("image"),
            )


# --------------------------------------------------------------------------- client → server


@dataclasses.dataclass(frozen=True)
class Hello(Message):
    TYPE = "hello"
    PATH = "hello"
    version: tuple[int, ...] = wire(ListOf(Int(0, 65535), 2, 2), "[major, minor]")
    client: str = wire(Str(1, 128), "name and version of the editor plugin")
    kind: str = wire(Str(choices=CLIENT_KINDS), default="other")
    token: str | None = wire(
        Optional(Str(0, 256)), "shared secret; required unless the server is loopback-only", default=None
    )
    capabilities: tuple[str, ...] = wire(ListOf(Str(1, 64), 0, 64), "optional features, e.g. zlib", default=())
    resume: str | None = wire(Optional(Str(1, 128)), "session id from an earlier welcome", default=None)


@dataclasses.dataclass(frozen=True)
class Submit(Message):
    TYPE = "submit"
    PATH = "submit"
    job_id: str = wire(JOB_ID, "chosen by the client, unique among its own jobs")
    task: str = wire(Str(choices=TASKS))
    model: str = wire(Str(1, 256), "checkpoint catalogue id")
    image: Image = wire(ImageKind((PixelFormat.RGBA8, PixelFormat.RGBA16, PixelFormat.RGBAF32)), "layer pixels")
    origin: Point = wire(Nested(Point), "document position of image's top-left pixel", default=Point(x=0, y=0))
    mask: Image | None = wire(
        Optional(ImageKind((PixelFormat.GRAY8,))),
        "selection coverage, same size as image; required for inpaint",
        default=None,
    )
    prompt: str = wire(Str(0, 8000), default="")
    negative_prompt: str = wire(Str(0, 8000), default="")
    strength: float = wire(
        Float(0.0, 1.0), "denoising strength: 0 = unchanged, 1 = new image", default=DEFAULT_STRENGTH
    )
    steps: int = wire(
        Int(1, MAX_STEPS), "scheduler steps at strength 1; int(steps × strength) run", default=DEFAULT_STEPS
    )
    guidance: float = wire(Float(0.0, 30.0), "classifier-free guidance scale", default=DEFAULT_GUIDANCE)
    seed: int | None = wire(Optional(SEED), "nil = server picks; image i of a batch uses seed + i", default=None)
    scheduler: str = wire(Str(1, 32), ", ".join(SCHEDULERS), default=DEFAULT_SCHEDULER)
    batch_size: int = wire(Int(1, 64, limit="max_batch"), default=1)
    context: Rect | None = wire(
        Optional(Nested(Rect)), "what the model sees (document px); nil = automatic", default=None
    )
    result: Rect | None = wire(Optional(Nested(Rect)), "what is pasted (document px); nil = automatic", default=None)
    controls: tuple[Control, ...] = wire(ListOf(Nested(Control), 0, 16, limit="max_controls"), default=())
    preview: PreviewSettings = wire(Nested(PreviewSettings), default=PreviewSettings())
    inpaint: InpaintOptions = wire(Nested(InpaintOptions), default=InpaintOptions())
    loras: tuple[LoraWeight, ...] = wire(
        ListOf(Nested(LoraWeight), 0, MAX_LORAS),
        "since 1.3; `<lora:name:weight>` in the prompt adds more (a LoRA listed here wins)",
        default=(),
    )
    vae: str | None = wire(
        Optional(Str(1, 256)), "vae catalogue id (since 1.3); nil = the checkpoint's own", default=None
    )
    upscale: UpscaleOptions = wire(
        Nested(UpscaleOptions), "since 1.5; read only by the upscale task", default=UpscaleOptions()
    )
    references: tuple[Reference, ...] = wire(
        ListOf(Nested(Reference), 0, MAX_REFERENCES),
        "since 1.6; reference images for img2img and inpaint, each through an IP-Adapter",
        default=(),
    )
    live: bool = wire(
        Bool(), "since 1.6: a live job; it supersedes the session's earlier live job (see Live painting)", default=False
    )

    @property
    def image_rect(self) -> Rect:
        return Rect(x=self.origin.x, y=self.origin.y, w=self.image.width, h=self.image.height)

    @property
    def output_rect(self) -> Rect:
        """Where the result lands: the image scaled by the upscale factor, or the image itself."""
        f = self.upscale.factor if self.task == "upscale" else 1
        return Rect(x=self.origin.x * f, y=self.origin.y * f, w=self.image.width * f, h=self.image.height * f)

    def validate(self) -> None:
        if self.task == "inpaint" and self.mask is None:
            raise InvalidMessage("expected a mask for an inpaint job, got nil", self._path("mask"))
        if self.task == "upscale":
            for name in ("mask", "context", "result"):  # an upscale enlarges the whole image
                if getattr(self, name) is not None:
                    raise InvalidMessage(f"expected no {name} for an upscale job, got one", self._path(name))
        if self.mask is not None and self.mask.size != self.image.size:
            raise InvalidMessage(
                f"expected the mask to match the image size {self.image.width}×{self.image.height}, "
                f"got {self.mask.width}×{self.mask.height}",
                self._path("mask"),
            )
        for i, control in enumerate(self.controls):
            if control.image.size != self.image.size:
                raise InvalidMessage(
                    f"expected the control image to match the image size {self.image.width}×{self.image.height}, "
                    f"got {control.image.width}×{control.image.height}",
                    f"{self._path('controls')}[{i}].image",
                )
        if self.task == "upscale" and self.references:  # an upscale refines tiles of one picture
            raise InvalidMessage("expected no references for an upscale job, got some", self._path("references"))
        ids = [lora.id for lora in self.loras]
        if len(set(ids)) != len(ids):
            raise InvalidMessage("expected each LoRA once, got one twice", self._path("loras"))
        for name in ("context", "result"):
            rect = getattr(self, name)
            if rect is not None and not self.image_rect.contains(rect):
                raise InvalidMessage(
                    f"expected a rectangle inside the image {self.image_rect}, got {rect}", self._path(name)
                )
        if self.context is not None and self.result is not None and not self.context.contains(self.result):
            raise InvalidMessage("expected the result rectangle inside the context rectangle", self._path("result"))


@dataclasses.dataclass(frozen=True)
class Cancel(Message):
    TYPE = "cancel"
    PATH = "cancel"
    job_id: str = wire(JOB_ID)


@dataclasses.dataclass(frozen=True)
class GetStatus(Message):
    TYPE = "get_status"
    PATH = "get_status"


# --------------------------------------------------------------------------- server → client


@dataclasses.dataclass(frozen=True)
class Welcome(Message):
    TYPE = "welcome"
    PATH = "welcome"
    version: tuple[int, ...] = wire(ListOf(Int(0, 65535), 2, 2), "[major, minor] the server speaks")
    server: str = wire(Str(1, 128))
    session: str = wire(Str(1, 128), "secret session id; send it as hello.resume after a reconnect")
    resumed: bool = wire(Bool(), "true if hello.resume named a live session")
    limits: Limits = wire(Nested(Limits))
    models: tuple[ModelInfo, ...] = wire(ListOf(Nested(ModelInfo), 0, 4096))
    device: str = wire(Str(1, 128), "e.g. cuda:0 (NVIDIA H200), cpu; the first of several")
    capabilities: tuple[str, ...] = wire(ListOf(Str(1, 64), 0, 64), default=())
    devices: tuple[DeviceStatus, ...] = wire(
        ListOf(Nested(DeviceStatus), 0, MAX_DEVICES), "one per worker (since 1.4)", default=()
    )


@dataclasses.dataclass(frozen=True)
class Queued(Message):
    TYPE = "queued"
    PATH = "queued"
    job_id: str = wire(JOB_ID)
    position: int = wire(Int(0, 1 << 20), "jobs that will start before this one (0 = next)")


@dataclasses.dataclass(frozen=True)
class Started(Message):
    TYPE = "started"
    PATH = "started"
    job_id: str = wire(JOB_ID)
    steps: int = wire(Int(0, 10_000), "denoising steps that will actually run")
    steps_requested: int = wire(Int(0, 10_000), "submit.steps")
    width: int = wire(Int(0, 65535), "generation width after the resolution autopilot")
    height: int = wire(Int(0, 65535))
    seeds: tuple[int, ...] = wire(ListOf(SEED, 1, 64))


@dataclasses.dataclass(frozen=True)
class Progress(Message):
    TYPE = "progress"
    PATH = "progress"
    job_id: str = wire(JOB_ID)
    step: int = wire(Int(0, 10_000), "steps completed")
    total: int = wire(Int(0, 10_000))
    preview: Image | None = wire(
        Optional(ImageKind((PixelFormat.RGBA8,))), "low-resolution look at the result rectangle", default=None
    )


@dataclasses.dataclass(frozen=True)
class Result(Message):
    TYPE = "result"
    PATH = "result"
    job_id: str = wire(JOB_ID)
    images: tuple[Image, ...] = wire(
        ListOf(ImageKind((PixelFormat.RGBA8, PixelFormat.RGBA16, PixelFormat.RGBAF32)), 1, 64),
        "one per batch item, the result rectangle, alpha = compositing mask",
    )
    rect: Rect = wire(Nested(Rect), "document position and size of every image")
    seeds: tuple[int, ...] = wire(ListOf(SEED, 1, 64))
    timings: dict[str, float] = wire(Timings(), "seconds per stage", default_factory=dict)

    def validate(self) -> None:
        for i, img in enumerate(self.images):
            if img.size != (self.rect.w, self.rect.h):
                raise InvalidMessage("expected every image to match rect's size", f"{self._path('images')}[{i}]")
        if len(self.seeds) != len(self.images):
            raise InvalidMessage(f"expected {len(self.images)} seeds, got {len(self.seeds)}", self._path("seeds"))


@dataclasses.dataclass(frozen=True)
class JobError(Message):
    TYPE = "job_error"
    PATH = "job_error"
    job_id: str = wire(JOB_ID)
    code: str = wire(Str(1, 64), "see the error codes")
    message: str = wire(Str(0, 4000), "plain words for the painter")
    field: str = wire(Str(0, 256), "dotted path of the offending field, or empty", default="")


@dataclasses.dataclass(frozen=True)
class Cancelled(Message):
    TYPE = "cancelled"
    PATH = "cancelled"
    job_id: str = wire(JOB_ID)
    superseded_by: str | None = wire(
        Optional(JOB_ID), "since 1.6: the newer live job that replaced this one; nil = cancelled", default=None
    )


@dataclasses.dataclass(frozen=True)
class JobStatus(Message):
    """Sent after a resumed welcome, once per job the session still owns."""

    TYPE = "job_status"
    PATH = "job_status"
    job_id: str = wire(JOB_ID)
    state: str = wire(Str(choices=JOB_STATES))
    position: int | None = wire(Optional(Int(0, 1 << 20)), "for queued jobs", default=None)


@dataclasses.dataclass(frozen=True)
class Status(Message):
    TYPE = "status"
    PATH = "status"
    queue_length: int = wire(Int(0, 1 << 20), "jobs waiting, all editors")
    running: int = wire(Int(0, 1024), "jobs running now")
    editors: int = wire(Int(0, 1 << 20), "connected editors")
    loaded_models: tuple[str, ...] = wire(ListOf(Str(1, 256), 0, 64), "on any device", default=())
    device: str = wire(Str(1, 128), "the first device of several", default="cpu")
    devices: tuple[DeviceStatus, ...] = wire(
        ListOf(Nested(DeviceStatus), 0, MAX_DEVICES), "one per worker (since 1.4)", default=()
    )


@dataclasses.dataclass(frozen=True)
class Error(Message):
    """An error not tied to a job (bad frame, bad handshake, ...). ``fatal``: the server closes next."""

    TYPE = "error"
    PATH = "error"
    code: str = wire(Str(1, 64))
    message: str = wire(Str(0, 4000))
    field: str = wire(Str(0, 256), default="")
    fatal: bool = wire(Bool(), default=False)
    job_id: str | None = wire(
        Optional(JOB_ID),
        "the job named by the refused frame (since 1.1); never changes that job's state",
        default=None,
    )


CLIENT_MESSAGES: tuple[type[Message], ...] = (Hello, Submit, Cancel, GetStatus)
SERVER_MESSAGES: tuple[type[Message], ...] = (
    Welcome,
    Queued,
    Started,
    Progress,
    Result,
    JobError,
    Cancelled,
    JobStatus,
    Status,
    Error,
)
ALL_MESSAGES = CLIENT_MESSAGES + SERVER_MESSAGES
BY_TYPE: dict[str, type[Message]] = {m.TYPE: m for m in ALL_MESSAGES}

__all__ = [
    "ALL_MESSAGES",
    "BY_TYPE",
    "CLIENT_MESSAGES",
    "CONTROL_TYPES",
    "MAX_REFERENCES",
    "MAX_REFERENCE_SIDE",
    "MODEL_KINDS",
    "PROTOCOL_VERSION",
    "SERVER_MESSAGES",
    "TASKS",
    "UPSCALE_FACTORS",
    "WORKER_STATES",
    "Cancel",
    "Cancelled",
    "Control",
    "DeviceStatus",
    "Error",
    "GetStatus",
    "Hello",
    "Image",
    "InpaintOptions",
    "JobError",
    "JobStatus",
    "Limits",
    "LoraWeight",
    "Message",
    "ModelInfo",
    "PreviewSettings",
    "Progress",
    "Queued",
    "Reference",
    "Result",
    "Started",
    "Status",
    "Submit",
    "UpscaleOptions",
    "Welcome",
    "arch_family",
    "reference_size",
]
