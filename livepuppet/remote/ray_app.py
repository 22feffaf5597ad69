"""``livepuppet serve --ray``: the same ASGI app on a Ray Serve cluster (the optional ``ray`` extra).

Each replica builds the app of :mod:`livepuppet.remote.server` around its own
engine (``auto`` picks per machine). A WebSocket is one long request to Ray
Serve, so a session stays on the replica its connection reached for its whole
life, and "ongoing requests" are open sessions: autoscaling targets
``--max-sessions`` of them per replica, between one replica and one per GPU.
When a replica dies, its clients' connections break and they reconnect
through the proxy to a live replica, sending their portrait again
(:mod:`livepuppet.remote.client`). The model folder must be readable at the
same path on every node; TLS goes in a reverse proxy in front of Ray's.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from livepuppet.commands.options import ServeOptions
from livepuppet.errors import LivepuppetError
from livepuppet.remote.server import ServerPolicy


class Replica:
    """One Ray Serve replica: the model on this node's engine, and the app around it."""

    def __init__(self, folder: str, engine: str, options: dict[str, Any], http_host: str) -> None:
        from livepuppet.remote.server import build
        from livepuppet.runtime.choose import open_engine

        import ray

        opts = ServerPolicy(**{**options, "allow_origins": tuple(options["allow_origins"])})
        self._state = build(Path(folder), open_engine(folder, engine), opts)
        self._state.welcome["replica"] = ray.get_runtime_context().get_actor_name()  # what `ray.kill` takes
        self._host = http_host

    def __serve_build_asgi_app__(self):  # noqa: N807 - Ray Serve's hook: the ASGI app, built on the replica
        from livepuppet.web.server import guarded

        return guarded(self._state.app(), self._host)


def application(folder: Path, engine: str, options: ServerPolicy, *, http_host: str = "127.0.0.1",
                replicas: int | None = None, gpus: int = 0, cpus_per_replica: float = 1.0):
    """The bound Serve application: ``replicas`` fixed, or autoscaled from 1 to one per GPU (one, without GPUs)."""
    from ray import serve

    actor = {"num_gpus": 1, "num_cpus": cpus_per_replica} if gpus else {"num_cpus": cpus_per_replica}
    scaling: dict[str, Any] = {"num_replicas": replicas} if replicas else {"autoscaling_config": {
        "min_replicas": 1, "max_replicas": max(1, gpus), "target_ongoing_requests": options.max_sessions,
        "upscale_delay_s": 5.0, "downscale_delay_s": 120.0}}
    deployment = serve.deployment(
        serve.ingress()(Replica), name="livepuppet", ray_actor_options=actor,
        max_ongoing_requests=options.max_sessions + 1,  # the one more hears "busy" from the app, not a queue
        health_check_period_s=2.0, health_check_timeout_s=10.0, graceful_shutdown_timeout_s=3.0, **scaling)
    return deployment.bind(str(Path(folder).absolute()), engine, asdict(options), http_host)


def quiet_ray() -> None:
    """Ray Serve's INFO lines are not for users."""
    import logging

    for name in ("ray", "ray.serve"):
        logging.getLogger(name).setLevel(logging.ERROR)


def serve_on_ray(folder: Path, args: ServeOptions, options: ServerPolicy, console: Console) -> int:
    """Start (or join) Ray, deploy, and serve until Ctrl+C."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise LivepuppetError("--ray needs Ray Serve: pip install 'livepuppet[ray]'") from None
    if args.certfile:
        raise LivepuppetError("--ray serves through Ray's own proxy: put TLS in a reverse proxy in front of it "
                              "(docs/remote-protocol.md), without --certfile")
    quiet_ray()
    ray.init(address=args.ray_address, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             configure_logging=False)
    try:
        serve.start(http_options={"host": args.host, "port": args.port}, detached=False)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        serve.run(application(folder, args.engine, options, http_host=args.host, gpus=gpus), name="livepuppet",
                  route_prefix="/", blocking=False)
        console.print(f"livepuppet serve: {folder.name} on Ray Serve at ws://{args.host}:{args.port} "
                      f"({gpus or 'no'} GPUs: up to {max(1, gpus)} replicas, {options.max_sessions} sessions "
                      "each); Ctrl+C stops it", soft_wrap=True)
        threading.Event().wait()
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
