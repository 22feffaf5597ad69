"""Live puppeteering: a webcam drives the portrait in real time.

capture.py reads the camera on a thread, framing.py follows the face,
loop.py runs the model on a worker thread, sinks.py shows/sends/records.
"""

from livepuppet.live.capture import Capture, CaptureState, list_cameras, open_camera
from livepuppet.live.framing import Box, FaceFramer
from livepuppet.live.loop import Animator, LiveStats, run_live
from livepuppet.live.sinks import PreviewView, PreviewWindow, RecordingSink, VirtualCameraSink

__all__ = [
    "Animator", "Box", "Capture", "CaptureState", "FaceFramer", "LiveStats", "PreviewView",
    "PreviewWindow", "RecordingSink", "VirtualCameraSink", "list_cameras", "open_camera", "run_live",
]
