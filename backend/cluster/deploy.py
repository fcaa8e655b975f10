"""Joining a Ray cluster and deploying the engine on it (``sfumato serve --ray ADDRESS|auto``).

The front process stays a Ray *driver*: it connects to the cluster, starts Serve without its HTTP
proxies (nothing listens but Sfumato's own server, with its token and origin checks), deploys
:class:`~.replica.Replica` as the application ``config.ray_app``, and gets one
:class:`~.remote.RayEngine` per slot. Blocking calls: run them off the event loop.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ..config import Config, ConfigError
from ..server.hub import EngineLike
from .remote import RayEngine
from .replica import EngineFactory, Replica, replica_engine

log = logging.getLogger(__name__)


def connect(address: str) -> None:
    """Join the cluster at ``address`` (``auto``: the one ``ray start`` runs on this machine), unless joined.
    The replicas' logs stay in the cluster's log folders (Serve's own per replica)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray Serve: install the cluster extra (pip install 'sfumato[cluster]')") from None
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: {exc}") from None


def replica_options(config: Config) -> dict[str, Any]:
    """The deployment's options from the config: replicas, resources per replica, autoscaling bounds."""
    options: dict[str, Any] = {
        "max_ongoing_requests": 1,  # one job at a time per replica, like a local worker
        "ray_actor_options": {"num_gpus": config.ray_gpus_per_replica, "num_cpus": config.ray_cpus_per_replica},
    }
    if config.ray_max_replicas > 0:
        options["autoscaling_config"] = {
            "min_replicas": config.ray_min_replicas,
            "initial_replicas": max(config.ray_min_replicas, min(config.ray_replicas, config.ray_max_replicas)),
            "max_replicas": config.ray_max_replicas,
            "target_ongoing_requests": 1,
        }
    else:
        options["num_replicas"] = config.ray_replicas
    return options


def slots(config: Config) -> int:
    """How many jobs the cluster runs at once, at most: one per replica."""
    return config.ray_max_replicas if config.ray_max_replicas > 0 else config.ray_replicas


def deploy(config: Config, checker: EngineLike, factory: EngineFactory = replica_engine) -> list[RayEngine]:
    """Deploy the replicas (waits until they run) and return one engine per slot."""
    from ray import serve

    serve.start(proxy_location="Disabled")
    cpu_threads = int(config.ray_cpus_per_replica) if config.ray_gpus_per_replica == 0 else 0
    deployment = serve.deployment(name="engine", **replica_options(config))(Replica)
    # replicas need neither the token (the front keeps auth) nor the front's device choice (Ray assigns theirs)
    shipped = dataclasses.replace(config, token=None, device=["auto"])
    handle = serve.run(deployment.bind(shipped, factory, cpu_threads), name=config.ray_app, route_prefix=None)
    log.info("the engine runs on Ray Serve: %s", replica_options(config))
    return [RayEngine(checker, handle, slot) for slot in range(slots(config))]


def undeploy(app: str, leave: bool = True) -> None:
    """Remove the replicas (their GPUs are free again) and, with ``leave``, disconnect from the cluster."""
    import ray
    from ray import serve

    try:
        serve.delete(app)
    finally:
        if leave:
            ray.shutdown()
