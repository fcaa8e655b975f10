"""Server settings: defaults < TOML file in the user's config folder < SFUMATO_* environment < flags."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfumato.protocol.messages import MAX_DEVICES  # a status lists each replica as a device

from .models.placement import MEMORY_MODES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the same parser, from PyPI
    import tomli as tomllib


MIN_TOKEN_CHARS = 16  # off loopback: a token anyone on the network could guess protects nothing


class ConfigError(Exception):
    """Settings that cannot work; the message says which and why."""


def user_config_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "sfumato"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "sfumato"
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "sfumato"


def user_cache_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "sfumato" / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "sfumato"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sfumato"


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 7860
    model_dirs: list[Path] = field(default_factory=list)
    cache_dir: Path = field(default_factory=user_cache_dir)
    device: list[str] = field(default_factory=lambda: ["auto"])  # a worker per entry: auto|all|cpu|cuda|cuda:N|mps
    precision: str = "auto"  # auto | fp16 | bf16 | fp32
    token: str | None = None
    allowed_origins: list[str] = field(default_factory=list)
    allow_download: bool = False  # allow hf:owner/name repositories; local models never download
    builtin_models: bool = True
    # limits
    max_message_mib: int = 256
    max_pixels: int = 4096 * 4096
    max_batch: int = 8
    max_queued_per_editor: int = 32
    max_controls: int = 4
    max_editors: int = 64  # connections at once; more are refused with HTTP 503
    # memory held by jobs: inputs while waiting or running, results until delivered (see README "Reliability")
    job_memory_mib: int = 4096  # all editors together
    editor_memory_mib: int = 1024  # one editor (session), connected or waiting to resume
    # sessions
    resume_ttl_s: float = 600.0
    send_timeout_s: float = 30.0
    outbox_mib: int = 16  # events waiting for one editor (results and previews are not copied into it)
    hello_timeout_s: float = 10.0
    model_memory_gib: float = 12.0
    memory: str = "auto"  # auto | high | medium | low: where model weights live (backend/models/placement.py)
    # the AUTOMATIC1111 HTTP API beside the websocket server (backend/a1111), on the same host
    a1111_api: bool = False
    a1111_port: int = 7861
    # the engine on a Ray Serve cluster instead of local workers (backend/cluster; README "Cluster (Ray Serve)")
    ray_address: str | None = None  # auto (the cluster `ray start` runs here) or its address; None: local
    ray_replicas: int = 1  # replicas (jobs at once) without autoscaling
    ray_gpus_per_replica: float = 1.0  # 0 for a CPU-only cluster
    ray_cpus_per_replica: float = 1.0  # a CPU replica's torch threads, too
    ray_min_replicas: int = 0  # with ray_max_replicas > 0: Serve adds and removes replicas between the two
    ray_max_replicas: int = 0
    ray_app: str = "sfumato"  # the Serve application's name: each front on one cluster needs its own

    def check(self) -> None:
        if not self.is_loopback() and len(self.token or "") < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"refusing to listen on {self.host}: any machine that can reach it could use your GPU and "
                f"read your pictures. Set a token of at least {MIN_TOKEN_CHARS} characters (--token or "
                "SFUMATO_TOKEN; `python3 -c 'import secrets; print(secrets.token_urlsafe(24))'` makes one) "
                "or bind 127.0.0.1."
            )
        if self.editor_memory_mib > self.job_memory_mib:
            raise ConfigError(
                f"editor_memory_mib ({self.editor_memory_mib}) cannot exceed job_memory_mib ({self.job_memory_mib})"
            )
        for name in ("port", "a1111_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name} must be 0..65535, got {getattr(self, name)}")
        if self.memory not in MEMORY_MODES:
            raise ConfigError(f"memory must be one of {', '.join(MEMORY_MODES)}, got {self.memory!r}")
        self._check_ray()
        for origin in self.allowed_origins:
            if origin in ("*", "null"):
                raise ConfigError(f"allowed origin {origin!r} would let any web page drive the backend")

    def _check_ray(self) -> None:
        for name in ("ray_replicas", "ray_max_replicas"):
            low = 1 if name == "ray_replicas" else 0  # 0: no autoscaling
            if not low <= getattr(self, name) <= MAX_DEVICES:
                raise ConfigError(f"{name} must be {low}..{MAX_DEVICES}, got {getattr(self, name)}")
        if self.ray_max_replicas and not 0 <= self.ray_min_replicas <= self.ray_max_replicas:
            raise ConfigError(
                f"ray_min_replicas ({self.ray_min_replicas}) must be 0..ray_max_replicas ({self.ray_max_replicas})"
            )
        if not self.ray_app:
            raise ConfigError("ray_app cannot be empty")
        if self.ray_gpus_per_replica < 0 or self.ray_cpus_per_replica <= 0:
            raise ConfigError("ray_gpus_per_replica must be ≥ 0 and ray_cpus_per_replica > 0")

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


_ENV_PREFIX = "SFUMATO_"


def _coerce(name: str, value: Any) -> Any:
    f = {f.name: f for f in dataclasses.fields(Config)}.get(name)
    if f is None:
        raise ConfigError(f"unknown setting {name!r}")
    kind = str(f.type)
    try:
        if kind.startswith("list[Path]"):
            items = value if isinstance(value, list) else [v for v in str(value).split(os.pathsep) if v]
            return [Path(v).expanduser() for v in items]
        if kind.startswith("list[str]"):
            return value if isinstance(value, list) else [v for v in str(value).split(",") if v]
        if kind == "Path":
            return Path(value).expanduser()
        if kind == "bool":
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        return None if value in (None, "") else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name!r}: cannot use {value!r} as {kind}") from None


def load_config(file: Path | None = None, env: dict[str, str] | None = None, **flags: Any) -> Config:
    """Merge the settings layers. ``flags`` set to ``None`` are treated as not given."""
    values: dict[str, Any] = {}
    path = file if file is not None else user_config_dir() / "config.toml"
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        section = data.get("server", data)
        values.update({k.replace("-", "_"): _coerce(k.replace("-", "_"), v) for k, v in section.items()})
    elif file is not None:
        raise ConfigError(f"config file {file} does not exist")
    for key, raw in (os.environ if env is None else env).items():
        if key.startswith(_ENV_PREFIX) and key != "SFUMATO_TEST_OUT":
            name = key[len(_ENV_PREFIX) :].lower()
            if name in {f.name for f in dataclasses.fields(Config)}:
                values[name] = _coerce(name, raw)
    values.update({k: v for k, v in flags.items() if v is not None})
    cfg = Config(**values)
    cfg.check()
    return cfg
