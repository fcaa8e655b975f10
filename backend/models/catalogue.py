"""The model catalogue: what is in the configured model folders, by id, usable or not and why.

Models are chosen over the wire by catalogue id only; an id is looked up here, so no path ever
comes from an editor. Pointing a root at an A1111 ``models`` folder or a ComfyUI ``models`` folder
works: the scan recurses and classifies every file by its tensors.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sfumato.protocol import ErrorCode, ModelInfo, arch_family

from ..errors import JobFailure
from .builtin import TINY_CONTROLNET_ID, TINY_ID, TINY_NATIVE_SIZE, ensure_builtin
from .detect import NotAModel, detect_diffusers_folder, detect_single_file
from .pickled import EMBEDDING_FOLDERS, embedding_entry_arch

HUB_PREFIX = "hf:"
HUB_REPO = re.compile(r"[A-Za-z0-9][\w.\-]{0,95}/[A-Za-z0-9][\w.\-]{0,95}")  # Hugging Face's owner/name rules
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
MAX_DEPTH = 5
# Where A1111 (ESRGAN, RealESRGAN, SwinIR) and ComfyUI (upscale_models) keep upscalers: a file there
# whose tensors this scan does not recognise is still offered as one, and spandrel decides on load.
UPSCALER_FOLDERS = frozenset(("esrgan", "realesrgan", "swinir", "upscale_models", "upscalers"))
# What an IP-Adapter's image features come from, for the words of a refusal: encoder, its file as published
ENCODER_FILES = {
    "vit-h": ("ViT-H/14", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"),
    "vit-g": ("ViT-bigG/14", "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors"),
    "vit-l": ("ViT-L/14", "clip-vit-large-patch14.safetensors"),
}
ENCODER_OF_FEATURE = {
    "embeds:1024": "vit-h",
    "hidden:1280": "vit-h",
    "embeds:1280": "vit-g",
    "hidden:1664": "vit-g",
    "embeds:768": "vit-l",
    "hidden:1024": "vit-l",
}
ADAPTER_FILES = {"sd15": "ip-adapter_sd15.safetensors", "sdxl": "ip-adapter_sdxl_vit-h.safetensors"}
_CONTROL_WORDS = {
    "canny": "canny",
    "depth": "depth",
    "lineart": "lineart",
    "openpose": "pose",
    "pose": "pose",
    "scribble": "scribble",
    "softedge": "softedge",
    "hed": "softedge",
    "tile": "tile",
}


@dataclass(frozen=True)
class ModelEntry:
    id: str
    kind: str  # checkpoint | controlnet | lora | embedding | vae | preview_decoder | upscaler | unusable
    arch: str
    path: Path
    format: str  # diffusers | single_file | hub | pickle (refused) | pickled_embedding (models/pickled.py)
    native_size: int = 0
    control_type: str | None = None
    test: bool = False
    problem: str = ""  # why it is unusable; empty when usable
    size_bytes: int = 0  # on disk
    features: tuple[str, ...] = ()  # image features an IP-Adapter reads or a CLIP vision encoder gives (detect.py)

    @property
    def usable(self) -> bool:
        return not self.problem

    @property
    def label(self) -> str:
        base = self.id.removeprefix("builtin:")
        return f"{base} (test model, random weights)" if self.test else base

    def info(self) -> ModelInfo:
        return ModelInfo(
            id=self.id,
            kind=self.kind,
            arch=self.arch,
            label=self.label,
            native_size=self.native_size,
            control_type=self.control_type,
            test=self.test,
            size_bytes=self.size_bytes,
            problem=self.problem,
        )

    @property
    def name(self) -> str:
        """What A1111 calls it in a prompt: the file name without extension (``<lora:NAME:0.8>``, ``NAME``)."""
        return self.id.rsplit("/", 1)[-1]


def guess_control_type(name: str) -> str | None:
    """ControlNet files do not say what they condition on; their names conventionally do."""
    for word in re.split(r"[^a-z]+", name.lower()):
        if word in _CONTROL_WORDS:
            return _CONTROL_WORDS[word]
    return None


class Catalogue:
    def __init__(self, entries: list[ModelEntry], allow_hub: bool = False) -> None:
        self._entries = {e.id: e for e in entries}
        self.allow_hub = allow_hub

    @classmethod
    def scan(cls, roots: list[Path], cache_dir: Path, builtin: bool = True, allow_hub: bool = False) -> Catalogue:
        entries: list[ModelEntry] = []
        if builtin:
            tiny, tiny_cn = ensure_builtin(cache_dir)
            entries.append(
                ModelEntry(
                    TINY_ID,
                    "checkpoint",
                    "sd15-tiny",
                    tiny,
                    "diffusers",
                    TINY_NATIVE_SIZE,
                    test=True,
                    size_bytes=_size(tiny),
                )
            )
            entries.append(
                ModelEntry(
                    TINY_CONTROLNET_ID,
                    "controlnet",
                    "sd15-tiny",
                    tiny_cn,
                    "diffusers",
                    test=True,
                    size_bytes=_size(tiny_cn),
                )
            )
        seen = {e.id for e in entries}
        for root in roots:
            for entry in _scan_root(root.resolve()) + _a1111_embeddings(root.resolve()):
                eid = entry.id
                n = 2
                while eid in seen:
                    eid, n = f"{entry.id}@{n}", n + 1
                seen.add(eid)
                entries.append(entry if eid == entry.id else dataclasses.replace(entry, id=eid))
        return cls(entries, allow_hub)

    def all(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def usable(self) -> list[ModelEntry]:
        return [e for e in self._entries.values() if e.usable]

    def get(self, model_id: str, kind: str = "checkpoint", field: str = "submit.model") -> ModelEntry:
        entry = self._entries.get(model_id)
        if entry is None and model_id.startswith(HUB_PREFIX) and kind == "checkpoint":
            return self._hub_entry(model_id, field)
        if entry is None:
            raise JobFailure(
                f"unknown model {model_id!r}; ask for the catalogue with `sfumato models`",
                field,
                ErrorCode.UNKNOWN_MODEL,
            )
        if not entry.usable:
            raise JobFailure(f"model {model_id!r} cannot be used: {entry.problem}", field, ErrorCode.UNKNOWN_MODEL)
        if entry.kind != kind:
            raise JobFailure(f"model {model_id!r} is a {entry.kind}, expected a {kind}", field, ErrorCode.UNKNOWN_MODEL)
        return entry

    def named(self, kind: str, name: str, field: str) -> ModelEntry:
        """A LoRA or embedding by the name a prompt gives it: its id, or its file name (exact case first)."""
        found = [e for e in self.usable() if e.kind == kind and name in (e.id, e.name)]
        found = found or [e for e in self.usable() if e.kind == kind and name.lower() == e.name.lower()]
        if not found:
            raise JobFailure(
                f"no {kind} named {name!r} in the model folders (`sfumato models` lists them)",
                field,
                ErrorCode.UNKNOWN_MODEL,
            )
        return sorted(found, key=lambda e: e.id)[0]

    def of_kind(self, kind: str) -> list[ModelEntry]:
        return sorted((e for e in self.usable() if e.kind == kind), key=lambda e: e.id)

    def _hub_entry(self, model_id: str, field: str) -> ModelEntry:
        """``hf:owner/name``: a diffusers repository on Hugging Face, only when downloads are allowed."""
        repo = model_id[len(HUB_PREFIX) :]
        if not HUB_REPO.fullmatch(repo) or ".." in repo:  # never a path: "hf:../x" must not reach the disk
            raise JobFailure(
                f"{model_id!r} is not a Hugging Face repository id (hf:owner/name)", field, ErrorCode.UNKNOWN_MODEL
            )
        if not self.allow_hub:
            raise JobFailure(
                f"{model_id!r} would be downloaded from Hugging Face, but downloads are off: start the server with "
                "--allow-download while online, or put the model into a model folder",
                field,
                ErrorCode.MISSING_WEIGHTS,
            )
        arch = "sdxl" if "xl" in repo.lower() else "sd15"
        return ModelEntry(model_id, "checkpoint", arch, Path(repo), "hub", 1024 if arch == "sdxl" else 512)

    def preview_decoder_for(self, arch: str) -> ModelEntry | None:
        """A TAESD-style decoder for the checkpoint's family, when one is installed."""
        family = arch_family(arch)
        found = [e for e in self.usable() if e.kind == "preview_decoder" and e.arch == family]
        return sorted(found, key=lambda e: e.id)[0] if found else None

    def controlnet_for(self, control_type: str, arch: str, field: str) -> ModelEntry:
        """Pick a ControlNet of the given type that fits the checkpoint's architecture."""
        family = arch_family(arch)
        candidates = [
            e
            for e in self.usable()
            if e.kind == "controlnet"
            and arch_family(e.arch) == family
            and (e.control_type == control_type or (e.test and arch.endswith("tiny")))
        ]
        if not candidates:
            raise JobFailure(
                f"no {control_type} ControlNet for {family} models was found in the model folders; "
                f"put one (e.g. a *{control_type}*.safetensors ControlNet) there",
                field,
                ErrorCode.MISSING_WEIGHTS,
            )
        return sorted(candidates, key=lambda e: e.id)[0]

    def ipadapter_for(self, arch: str, field: str) -> ModelEntry:
        """An IP-Adapter that fits the checkpoint's family; one whose image encoder is installed first."""
        family = arch_family(arch)
        fits = [e for e in self.of_kind("ipadapter") if arch_family(e.arch) == family]
        if not fits:
            raise JobFailure(
                f"no IP-Adapter for {family} models was found in the model folders; put one "
                f"(e.g. {ADAPTER_FILES.get(family, 'an ip-adapter .safetensors')}) into models/ipadapter",
                field,
                ErrorCode.MISSING_WEIGHTS,
            )
        with_encoder = [e for e in fits if self._encoders(e)]
        return (with_encoder or fits)[0]

    def clip_vision_for(self, adapter: ModelEntry, field: str) -> ModelEntry:
        """The CLIP vision encoder giving the image features ``adapter`` reads (its width says which)."""
        found = self._encoders(adapter)
        if not found:
            feature = adapter.features[0] if adapter.features else "?:?"
            kind, width = feature.split(":")
            what = "image embeddings" if kind == "embeds" else "hidden states"
            name, file = ENCODER_FILES.get(ENCODER_OF_FEATURE.get(feature, ""), ("", ""))
            where = (
                f"put the {name} encoder ({file}) into models/clip_vision" if name else "put it into models/clip_vision"
            )
            raise JobFailure(
                f"IP-Adapter {adapter.id!r} reads the {width}-wide {what} of a CLIP vision encoder, and none in the "
                f"model folders gives them: {where}",
                field,
                ErrorCode.MISSING_WEIGHTS,
            )
        return found[0]

    def _encoders(self, adapter: ModelEntry) -> list[ModelEntry]:
        return [e for e in self.of_kind("clip_vision") if adapter.features and adapter.features[0] in e.features]


def _a1111_embeddings(root: Path) -> list[ModelEntry]:
    """A1111 keeps embeddings beside its ``models`` folder, not inside (ComfyUI's ``models/embeddings`` is)."""
    folder = root.parent / "embeddings"
    if root.name != "models" or not folder.is_dir():
        return []
    return [dataclasses.replace(e, id="embeddings/" + e.id) for e in _scan_root(folder)]


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _scan_root(root: Path) -> list[ModelEntry]:
    found: list[ModelEntry] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if here != root and ((here / "model_index.json").is_file() or (here / "config.json").is_file()):
            found.append(_classify_folder(root, here))
            dirnames[:] = []  # a diffusers folder's subfolders are its components
            continue
        if depth >= MAX_DEPTH:
            dirnames[:] = []
        for name in sorted(filenames):
            path = here / name
            if name.endswith(".safetensors"):
                found.append(_classify_file(root, path))
            elif name.endswith(PICKLE_SUFFIXES) and EMBEDDING_FOLDERS & {p.lower() for p in path.parts[:-1]}:
                found.append(_classify_pickled_embedding(root, path))
            elif name.endswith(PICKLE_SUFFIXES):
                rel = path.relative_to(root).with_suffix("").as_posix()
                found.append(
                    ModelEntry(
                        rel,
                        "unusable",
                        "unknown",
                        path,
                        "pickle",
                        size_bytes=_size(path),
                        problem="a pickled checkpoint, which can run code when loaded; Sfumato never unpickles "
                        "models. Convert it to .safetensors (e.g. with diffusers' conversion scripts) or "
                        "download the .safetensors release",
                    )
                )
    return found


def _classify_pickled_embedding(root: Path, path: Path) -> ModelEntry:
    """An embedding saved with torch.save, read by torch's weights-only reader (models/pickled.py)."""
    rel = path.relative_to(root).with_suffix("").as_posix()
    size = _size(path)
    if not _inside(root, path):
        return _refused(rel, path, "pickle", "links outside the model folder")
    try:
        arch = embedding_entry_arch(path)
    except (NotAModel, OSError) as exc:
        problem = f"a pickled file that is not an embedding Sfumato can read safely: {exc}"
        return _refused(rel, path, "pickle", problem, size)
    return ModelEntry(rel, "embedding", arch, path, "pickled_embedding", size_bytes=size)


def _refused(rel: str, path: Path, fmt: str, problem: str, size: int = 0) -> ModelEntry:
    """A file or folder listed as unusable, with why (editors show it greyed out with the reason)."""
    return ModelEntry(rel, "unusable", "unknown", path, fmt, size_bytes=size, problem=problem)


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except ValueError:
        return False


def _classify_file(root: Path, path: Path) -> ModelEntry:
    rel = path.relative_to(root).with_suffix("").as_posix()
    size = _size(path)
    if not _inside(root, path):
        return _refused(rel, path, "single_file", "links outside the model folder")
    try:
        d = detect_single_file(path)
    except NotAModel as exc:
        if UPSCALER_FOLDERS & {part.lower() for part in path.relative_to(root).parts[:-1]}:
            return ModelEntry(rel, "upscaler", "unknown", path, "single_file", size_bytes=size)
        return _refused(rel, path, "single_file", str(exc), size)
    except OSError as exc:
        return _refused(rel, path, "single_file", str(exc), size)
    control = guess_control_type(path.stem) if d.kind == "controlnet" else None
    problem = ""
    if d.kind == "controlnet" and control is None:
        problem = "ControlNet type unknown: put canny/depth/lineart/openpose/scribble in its file name"
    if d.kind == "lora" and d.arch == "unknown":
        problem = "a LoRA of an unknown layout: no UNet or text-encoder keys that diffusers reads"
    return ModelEntry(
        rel,
        d.kind,
        d.arch,
        path,
        d.format,
        d.native_size,
        control,
        problem=problem,
        size_bytes=size,
        features=d.features,
    )


def _classify_folder(root: Path, folder: Path) -> ModelEntry:
    rel = folder.relative_to(root).as_posix()
    try:
        d = detect_diffusers_folder(folder)
    except NotAModel as exc:
        return _refused(rel, folder, "diffusers", str(exc), _size(folder))
    control = guess_control_type(folder.name) if d.kind == "controlnet" else None
    problem = ""
    if d.kind == "controlnet" and control is None:
        problem = "ControlNet type unknown: put canny/depth/lineart/openpose/scribble in its folder name"
    return ModelEntry(
        rel, d.kind, d.arch, folder, d.format, d.native_size, control, problem=problem, size_bytes=_size(folder)
    )
