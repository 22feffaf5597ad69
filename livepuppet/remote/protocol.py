"""The remote-rendering protocol, version 1: message layouts, limits and checks (docs/remote-protocol.md).

Control messages are JSON text; per-frame messages are binary with a fixed
little-endian header, so a frame's keypoints cost 8 + 24 x K bytes (248 for
10 keypoints) and nothing is parsed that is not bounded first. Both ends use
this module: the server (:mod:`livepuppet.remote.server`) to check what comes
in, the client (:mod:`livepuppet.remote.client`) to build what goes out.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from livepuppet.modelfolder.schema import ModelFolder

VERSION = 1
PATH = "/v1/session"          # the WebSocket endpoint
MODELS_PATH = "/v1/models/"   # the keypoint models a client without a local model fetches once
TOKEN_ENV = "LIVEPUPPET_TOKEN"
KEYPOINT_MODELS = ("kp_detector", "kp_processing")  # what a client runs itself

KEYPOINTS, PORTRAIT, FRAME = 0x01, 0x02, 0x81  # first byte of a binary message
FORMATS = {"jpeg": 0, "png": 1, "raw": 2}      # how frames come down; png and raw are lossless
FORMAT_NAMES = {v: k for k, v in FORMATS.items()}
KP_HEADER = struct.Struct("<BBHI")             # kind, 0, K, frame id
FRAME_HEADER = struct.Struct("<BBHIf")         # kind, format, 0, frame id, server ms
MAX_TEXT = 4096                                 # bytes of one JSON message
MAX_KEYPOINTS = 64
MAX_COORD = 1e3                                 # keypoints are about [-1, 1]; far beyond is garbage
MAX_FRAME_ID = 2**32 - 1

# WebSocket close codes: the reason goes with them, and in an "error" message just before.
CLOSE_BAD_MESSAGE, CLOSE_TOKEN, CLOSE_ORIGIN, CLOSE_IDLE = 4400, 4401, 4403, 4408
CLOSE_BUSY, CLOSE_TOO_BIG, CLOSE_VERSION = 1013, 1009, 4426
FATAL_CODES = (CLOSE_TOKEN, CLOSE_ORIGIN, CLOSE_VERSION)  # the client gives up: retrying cannot help


class ProtocolError(Exception):
    """A message broke the protocol; ``code`` is the WebSocket close code to end the session with."""

    def __init__(self, reason: str, code: int = CLOSE_BAD_MESSAGE):
        super().__init__(reason)
        self.reason, self.code = reason, code


@dataclass(frozen=True)
class Hello:
    token: str
    format: str
    quality: int


def parse_text(text: str, expected: tuple[str, ...] | None) -> dict[str, Any]:
    """A JSON control message of one of the ``expected`` types (None: any), bounded and type-checked."""
    if len(text) > MAX_TEXT:
        raise ProtocolError(f"a text message of {len(text)} bytes (at most {MAX_TEXT})", CLOSE_TOO_BIG)
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("a text message that is not JSON") from None
    kind = message.get("type") if isinstance(message, dict) else None
    if not isinstance(kind, str) or expected is not None and kind not in expected:
        raise ProtocolError(f"expected a {' or '.join(expected or ('typed',))} message, got {str(kind)[:40]!r}")
    return message


def text(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def hello(token: str | None, fmt: str = "jpeg", quality: int = 90) -> str:
    return text("hello", protocol=VERSION, token=token or "", format=fmt, quality=quality)


def parse_hello(message: dict[str, Any]) -> Hello:
    if message.get("protocol") != VERSION:
        raise ProtocolError(f"protocol {str(message.get('protocol'))[:10]} is not this server's ({VERSION}); "
                            "update livepuppet on one side", CLOSE_VERSION)
    token, fmt, quality = message.get("token", ""), message.get("format", "jpeg"), message.get("quality", 90)
    if not isinstance(token, str) or fmt not in FORMATS or type(quality) is not int or not 1 <= quality <= 100:
        raise ProtocolError("a hello with a malformed token, format (jpeg, png, raw) or quality (1-100)")
    return Hello(token, fmt, quality)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def file_facts(path: Path) -> dict[str, Any]:
    """{"sha256": hex, "bytes": size} of a file, read a MB at a time."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "bytes": size}


def model_id(folder: "ModelFolder") -> str:
    """What keypoints are compatible with: the checkpoint converted (its hash), at this frame size."""
    digest = folder.checkpoint_sha256
    if not digest:
        variant = folder.find("kp_detector", "tflite")
        digest = file_facts(folder.file(variant))["sha256"] if variant else folder.content_key
    h, w = folder.frame_size
    return f"{digest[:32]}-{w}x{h}-k{folder.num_kp}"


# -- keypoints up ------------------------------------------------------------------------------------------


def keypoints_message(frame_id: int, value: np.ndarray, jacobian: np.ndarray) -> bytes:
    """One frame's processed driving keypoints: value (K, 2) and jacobian (K, 2, 2), float32."""
    k = value.shape[-2]
    body = np.concatenate([np.asarray(value, "<f4").reshape(-1), np.asarray(jacobian, "<f4").reshape(-1)])
    return KP_HEADER.pack(KEYPOINTS, 0, k, frame_id) + body.tobytes()


def parse_keypoints(data: bytes, num_kp: int, last_id: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(frame id, value (1, K, 2), jacobian (1, K, 2, 2)); ids must increase, values be finite."""
    size = KP_HEADER.size + 24 * num_kp
    if len(data) != size:
        raise ProtocolError(f"a keypoints message of {len(data)} bytes (this model's are {size})")
    kind, _, k, frame_id = KP_HEADER.unpack_from(data)
    if k != num_kp:
        raise ProtocolError(f"{k} keypoints (this model has {num_kp})")
    if frame_id <= last_id:
        raise ProtocolError(f"frame {frame_id} after frame {last_id}: frame ids must increase")
    floats = np.frombuffer(data, "<f4", offset=KP_HEADER.size)
    if not np.isfinite(floats).all() or np.abs(floats).max() > MAX_COORD:
        raise ProtocolError("keypoints that are not finite or far out of range")
    value = floats[:2 * k].astype(np.float32).reshape(1, k, 2)
    return frame_id, value, floats[2 * k:].astype(np.float32).reshape(1, k, 2, 2)


# -- frames down -------------------------------------------------------------------------------------------


def encode_frame(frame_id: int, image: np.ndarray, fmt: str, quality: int, server_ms: float) -> bytes:
    """An (H, W, 3) RGB uint8 frame as a FRAME message in ``fmt``."""
    import cv2

    if fmt == "raw":
        payload = np.ascontiguousarray(image, np.uint8).tobytes()
    else:
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
        ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
        if not ok:
            raise RuntimeError("OpenCV could not encode a frame")
        payload = buf.tobytes()
    return FRAME_HEADER.pack(FRAME, FORMATS[fmt], 0, frame_id, server_ms) + payload


@dataclass(frozen=True)
class Frame:
    frame_id: int
    server_ms: float
    image: np.ndarray  # (H, W, 3) RGB uint8


def parse_frame(data: bytes, size: tuple[int, int]) -> Frame:
    """A FRAME message from the server, decoded; anything else is a ProtocolError."""
    import cv2

    if len(data) < FRAME_HEADER.size or data[0] != FRAME:
        raise ProtocolError("the server sent a binary message that is not a frame")
    _, fmt, _, frame_id, server_ms = FRAME_HEADER.unpack_from(data)
    payload = memoryview(data)[FRAME_HEADER.size:]
    h, w = size
    if FORMAT_NAMES.get(fmt) == "raw":
        if len(payload) != h * w * 3:
            raise ProtocolError(f"a raw frame of {len(payload)} bytes for {w}x{h}")
        image = np.frombuffer(payload, np.uint8).reshape(h, w, 3)
    elif fmt in FORMAT_NAMES:
        bgr = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[:2] != (h, w):
            raise ProtocolError(f"a frame that is not a {w}x{h} {FORMAT_NAMES[fmt]} image")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    else:
        raise ProtocolError(f"a frame in unknown format {fmt}")
    return Frame(frame_id, float(server_ms), image)


# -- the portrait, up once ---------------------------------------------------------------------------------


def portrait_png(crop: np.ndarray) -> bytes:
    """The model-size crop (float32 in [0, 1]) as a 16-bit PNG: 1/65535 steps, far below a level."""
    import cv2

    scaled = np.rint(np.clip(np.asarray(crop, np.float32), 0, 1) * np.float32(65535)).astype(np.uint16)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(scaled[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("OpenCV could not encode the portrait")
    return bytes([PORTRAIT, 0, 0, 0]) + buf.tobytes()


def max_portrait_bytes(size: tuple[int, int]) -> int:
    """A 16-bit PNG of that size, stored uncompressed, with room for its chunks: anything larger is refused."""
    h, w = size
    return 4 + h * (w * 6 + 1) * 11 // 10 + 65536


def parse_portrait(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """A PORTRAIT message -> (H, W, 3) float32 RGB in [0, 1]; the PNG's header is checked before decoding."""
    import cv2

    from livepuppet.media import MAX_PIXELS, header_size

    if len(data) > max_portrait_bytes(size):
        raise ProtocolError(f"a portrait of {len(data)} bytes (at most {max_portrait_bytes(size)})", CLOSE_TOO_BIG)
    png = data[4:]
    dims = header_size(png[:64])
    h, w = size
    if dims is None or not png.startswith(b"\x89PNG"):
        raise ProtocolError("a portrait that is not a PNG")
    if dims[0] * dims[1] > MAX_PIXELS or dims != (w, h):
        raise ProtocolError(f"a {dims[0]}x{dims[1]} portrait; this server's model takes {w}x{h} crops")
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.shape[:2] != (h, w) or decoded.dtype not in (np.uint8, np.uint16):
        raise ProtocolError("a portrait PNG that does not decode to 8- or 16-bit pixels")
    if decoded.ndim == 2:
        decoded = np.repeat(decoded[..., None], 3, axis=2)
    if decoded.shape[2] not in (3, 4):
        raise ProtocolError("a portrait PNG that is not grey, RGB or RGBA")
    scale = np.float32(65535 if decoded.dtype == np.uint16 else 255)
    rgb = decoded[..., 2::-1].astype(np.float32)
    np.divide(rgb, scale, out=rgb)
    return np.ascontiguousarray(rgb)
