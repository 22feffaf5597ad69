from livepuppet import limits  # noqa: F401 - first: OpenCV's pixel limit must be set before cv2 loads

__version__ = "0.1.0"
