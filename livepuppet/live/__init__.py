"""Live puppeteering: a webcam drives the portrait in real time.

capture.py reads the camera on a thread, framing.py follows the face,
loop.py runs the model on a worker thread, sinks.py shows/sends/records,
cameras.py lists the cameras. Names load on first use, so ``doctor`` can
import cameras.py without OpenCV.
"""

from importlib import import_module

_WHERE = {
    "Capture": "capture", "CaptureState": "capture", "open_camera": "capture",
    "list_cameras": "cameras", "Box": "framing", "FaceFramer": "framing",
    "Animator": "loop", "LiveStats": "loop", "run_live": "loop",
    "PreviewView": "sinks", "PreviewWindow": "sinks", "RecordingSink": "sinks", "VirtualCameraSink": "sinks",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"livepuppet.live.{_WHERE[name]}"), name)
