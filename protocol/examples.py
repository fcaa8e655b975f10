"""One example of every protocol message: rendered into SPEC.md, pinned by the golden wire fixtures."""

from __future__ import annotations

from . import (
    PROTOCOL_VERSION,
    Cancel,
    Cancelled,
    Control,
    DeviceStatus,
    Error,
    GetStatus,
    Hello,
    Image,
    InpaintOptions,
    JobError,
    JobStatus,
    Limits,
    LoraWeight,
    Message,
    ModelInfo,
    Point,
    PreviewSettings,
    Progress,
    Queued,
    Rect,
    Reference,
    Result,
    Started,
    Status,
    Submit,
    Welcome,
)

RGBA_2x2 = Image(width=2, height=2, format="rgba8", data=bytes(range(16)))
MASK_2x2 = Image(width=2, height=2, format="gray8", data=bytes([0, 255, 128, 64]))


def examples() -> dict[str, Message]:
    return {
        "hello": Hello(
            version=PROTOCOL_VERSION,
            client="sfumato-krita/0.1",
            kind="krita",
            token="s3cret",
            capabilities=("zlib",),
            resume=None,
        ),
        "welcome": Welcome(
            version=PROTOCOL_VERSION,
            server="sfumato-backend/0.1",
            session="Zq3v9kY2",
            resumed=False,
            limits=Limits(
                max_message_bytes=268435456, max_pixels=16777216, max_batch=8, max_queued_per_editor=32, max_controls=4
            ),
            models=(
                ModelInfo(
                    id="builtin:tiny",
                    kind="checkpoint",
                    arch="sd15-tiny",
                    label="tiny (test model)",
                    native_size=64,
                    test=True,
                ),
                ModelInfo(
                    id="controlnet/canny-sd15",
                    kind="controlnet",
                    arch="sd15",
                    label="canny-sd15",
                    control_type="canny",
                    size_bytes=722601104,
                ),
                ModelInfo(id="Lora/detail", kind="lora", arch="sd15", label="detail", size_bytes=37868912),
                ModelInfo(
                    id="ESRGAN/4x-UltraSharp",
                    kind="upscaler",
                    arch="esrgan",
                    label="4x-UltraSharp",
                    size_bytes=66961958,
                ),
                ModelInfo(
                    id="ipadapter/ip-adapter_sd15",
                    kind="ipadapter",
                    arch="sd15",
                    label="ip-adapter_sd15",
                    size_bytes=44642768,
                ),
                ModelInfo(
                    id="clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K",
                    kind="clip_vision",
                    arch="vit-h",
                    label="CLIP-ViT-H-14-laion2B-s32B-b79K",
                    size_bytes=2528373448,
                ),
                ModelInfo(
                    id="Stable-diffusion/old",
                    kind="unusable",
                    arch="unknown",
                    label="old",
                    size_bytes=4265380512,
                    problem="a pickled checkpoint, which can run code when loaded",
                ),
            ),
            device="cuda:0 (NVIDIA H200)",
            capabilities=("zlib", "resume", "previews"),
            devices=(
                DeviceStatus(device="cuda:0 (NVIDIA H200)", state="running", loaded_models=("builtin:tiny",)),
                DeviceStatus(device="cuda:1 (NVIDIA H200)", state="idle"),
            ),
        ),
        "submit": Submit(
            job_id="krita-7",
            task="inpaint",
            model="builtin:tiny",
            image=RGBA_2x2,
            origin=Point(x=100, y=40),
            mask=MASK_2x2,
            prompt="a red fox",
            negative_prompt="blurry",
            strength=0.75,
            steps=24,
            guidance=6.5,
            seed=1234,
            scheduler="dpmpp_2m",
            batch_size=2,
            context=Rect(x=100, y=40, w=2, h=2),
            result=Rect(x=101, y=40, w=1, h=2),
            controls=(Control(type="canny", image=RGBA_2x2, preprocess=True, strength=0.8, start=0.0, end=0.9),),
            preview=PreviewSettings(enabled=True, max_per_second=4.0, max_size=256),
            inpaint=InpaintOptions(grow=8, feather=None, blend=4, fill="blur"),
            loras=(LoraWeight(id="Lora/detail", weight=0.8),),
            vae="VAE/vae-ft-mse-840000",
            references=(Reference(image=RGBA_2x2, weight=0.7, mode="style", adapter="ipadapter/ip-adapter_sd15"),),
        ),
        "cancel": Cancel(job_id="krita-7"),
        "get_status": GetStatus(),
        "queued": Queued(job_id="krita-7", position=2),
        "started": Started(job_id="krita-7", steps=18, steps_requested=24, width=512, height=512, seeds=(1234, 1235)),
        "progress": Progress(job_id="krita-7", step=3, total=18, preview=RGBA_2x2),
        "result": Result(
            job_id="krita-7",
            images=(MASK_2x2.__class__(width=1, height=2, format="rgba8", data=bytes(8)),),
            rect=Rect(x=101, y=40, w=1, h=2),
            seeds=(1234,),
            timings={"generate": 1.5, "total": 1.75},
        ),
        "job_error": JobError(
            job_id="krita-7", code="unknown_model", message="unknown model 'x'", field="submit.model"
        ),
        "cancelled": Cancelled(job_id="krita-7"),
        "job_status": JobStatus(job_id="krita-7", state="queued", position=0),
        "status": Status(
            queue_length=3,
            running=1,
            editors=2,
            loaded_models=("builtin:tiny",),
            device="cpu",
            devices=(
                DeviceStatus(device="cpu", state="running", loaded_models=("builtin:tiny",)),
                DeviceStatus(device="cpu", state="starting"),
            ),
        ),
        "error": Error(
            code="bad_frame", message="expected a map at the top level, got int 0", field="frame", fatal=False
        ),
    }
