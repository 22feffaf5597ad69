"""Issue 22: the same server on Ray Serve (`serve --ray`): a local Ray with two CPU replicas, two sessions,
one replica killed, its session resumes on the other by itself.

Ray is in the test extra, so this runs on CI; the test starts its own local
Ray (``address="local"``: never someone else's cluster) and tears it down.
About 15 s here, most of it Ray starting.
"""

from __future__ import annotations

import socket
import time

import pytest
import ray
from ray import serve

from livepuppet.remote.ray_app import application, quiet_ray
from livepuppet.remote.server import ServerPolicy
from livepuppet.runtime.choose import open_engine
from livepuppet.runtime.pipeline import Pipeline
from tests.remote_kit import levels, portrait_and_frames, remote_pipeline
from tests.test_convert import SmallModels


@pytest.fixture
def ray_serve(small: SmallModels):
    """Two replicas of the SMALL model's server behind Ray Serve's proxy on a free port; its ws:// URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    quiet_ray()
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=80 << 20,
             logging_level="ERROR", log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = application(small.model("legacy-fp32-b1"), "tflite", ServerPolicy(), replicas=2, cpus_per_replica=0.5)
        serve.run(app, name="livepuppet", route_prefix="/", blocking=False)
        yield f"ws://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_a_session_whose_replica_dies_resumes_on_the_other(small: SmallModels, ray_serve: str) -> None:
    model = small.model("legacy-fp32-b1")
    sessions = [remote_pipeline(ray_serve, model, "png") for _ in range(2)]
    inputs = [portrait_and_frames(64, 4, seed=20 + i) for i in range(2)]
    try:
        for (pipe, _), (source, driving) in zip(sessions, inputs):
            pipe.set_source(source)
            pipe.animate(driving[:1])
        replicas = [engine.client.welcome["replica"] for _, engine in sessions]
        print(f"\nsessions on {replicas}")
        victim = replicas[0]
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(victim, namespace="serve"))
        first = sessions[0][1].client
        assert first.wait_until(lambda: first.up and first.welcome["replica"] != victim or first.state == "refused",
                                30), first.reason
        resumed_after = time.monotonic() - killed_at
        results = []
        for (pipe, engine), (source, driving) in zip(sessions, inputs):
            results.append(pipe.animate(driving[1:]))  # frames sent again (a lost one is rendered by nobody)
        for got, (source, driving) in zip(results, inputs):
            local = Pipeline(open_engine(model, "tflite", threads=1))
            local.set_source(source)
            local.animate(driving[:1])  # the same calibration frame as the session's
            assert levels(got, local.animate(driving[1:])).max() <= 1  # the portrait went up again, to the other
        print(f"replica {victim} killed; its session resumed on {first.welcome['replica']} after "
              f"{resumed_after:.2f} s ({sessions[0][1].summary()})")
        assert first.reconnects == 1 and sessions[0][1].counts["remote"] == 4
    finally:
        for _, engine in sessions:
            engine.close()
