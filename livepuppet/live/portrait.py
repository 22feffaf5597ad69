"""A portrait of any framing: the model animates a vox-like crop, which is pasted back into the whole picture.

FOMM was trained on tight, centred head crops (the original crop-video rule:
a square about 1.8x the face box). A half-body photo or a wide shot squashed to
256x256 animates badly, so the face is found, that square is cut and animated,
and each output frame is blended back into the full picture through a mask
that is 1 inside and fades to 0 over a border (no visible seam). The picture is
capped at 1280x720, which is what the virtual camera and the recording show.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from livepuppet.live.framing import Box, face_target, square_box
from livepuppet.media import fit_frame, to_uint8

MAX_SIZE = (1280, 720)  # (w, h): the largest picture sent out
FEATHER = 0.12          # mask border, as a fraction of the crop side


@dataclass
class Portrait:
    """What the model animates (``crop``) and, with paste-back, where its output goes."""

    crop: np.ndarray                   # (h, w, 3) float32 [0, 1] at the model's frame size
    picture: np.ndarray | None = None  # whole picture, RGB uint8, capped at MAX_SIZE; None: no paste-back
    box: Box | None = None             # the crop square in picture pixels
    mask: np.ndarray | None = None     # (box.h, box.w, 1) float32 feathered mask

    @property
    def pasted(self) -> bool:
        return self.picture is not None

    def paste(self, pred: np.ndarray) -> np.ndarray:
        """The model's output for the crop in the whole picture (RGB uint8); the output itself without paste-back."""
        if self.picture is None or self.box is None or self.mask is None:
            return pred
        b = self.box
        interp = cv2.INTER_LINEAR if b.w >= pred.shape[1] else cv2.INTER_AREA
        inner = cv2.resize(np.asarray(pred, np.float32), (b.w, b.h), interpolation=interp)
        out = self.picture.copy()
        region = out[b.y:b.y + b.h, b.x:b.x + b.w].astype(np.float32) * np.float32(1 / 255)
        out[b.y:b.y + b.h, b.x:b.x + b.w] = to_uint8(region + self.mask * (inner - region))
        return out

    def keypoints(self, kp: np.ndarray) -> np.ndarray:
        """Keypoints in [-1, 1] of the crop -> [-1, 1] of the output frame."""
        if self.picture is None or self.box is None:
            return kp
        h, w = self.picture.shape[:2]
        b = self.box
        px = (np.asarray(kp)[..., 0] + 1) / 2 * b.w + b.x
        py = (np.asarray(kp)[..., 1] + 1) / 2 * b.h + b.y
        return np.stack([px / w * 2 - 1, py / h * 2 - 1], axis=-1)


def feather_mask(h: int, w: int, feather: float = FEATHER) -> np.ndarray:
    """1 inside, falling linearly to 0 at the edge over ``feather`` of the side."""
    ramp = max(1.0, feather * min(h, w))
    y = np.minimum(np.arange(h), np.arange(h)[::-1]) + 0.5
    x = np.minimum(np.arange(w), np.arange(w)[::-1]) + 0.5
    m = np.minimum(np.clip(y / ramp, 0, 1)[:, None], np.clip(x / ramp, 0, 1)[None, :])
    return m[..., None].astype(np.float32)


def cap_size(image: np.ndarray, limit: tuple[int, int] = MAX_SIZE) -> np.ndarray:
    """Shrink to fit within ``limit`` (w, h), keeping the aspect; smaller pictures stay as they are."""
    h, w = image.shape[:2]
    s = min(1.0, limit[0] / w, limit[1] / h)
    if s >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def frame_portrait(image: np.ndarray, size: tuple[int, int], paste_back: bool | None = None,
                   detector: object | None = None) -> tuple[Portrait, str | None]:
    """Prepare a source picture (float32 [0, 1] RGB) for a model of frame ``size`` (h, w).

    ``paste_back``: True/False, or None for "when the picture is larger than the
    crop": larger than the model's frame and than the face crop cut from it. Returns the portrait and a one-line notice (or None) for the user.
    """
    whole = Portrait(crop=fit_frame(image, size))
    if paste_back is False or paste_back is None and image.shape[0] <= size[0] and image.shape[1] <= size[1]:
        return whole, None  # a picture no larger than the model's frame is animated as it is, bit-exact
    from livepuppet.live.faces import face_detector, largest

    picture = cap_size(to_uint8(image[..., :3]))
    face = largest((detector or face_detector())(picture))  # type: ignore[operator]
    if face is None:
        return whole, "no face found in the portrait: animating the whole picture, without paste-back"
    h, w = picture.shape[:2]
    box = square_box(face_target(face), (h, w), size[1] / size[0])
    if paste_back is None and box.w >= 0.95 * w and box.h >= 0.95 * h:
        return whole, None  # already a head shot: the whole picture is the crop
    region = picture[box.y:box.y + box.h, box.x:box.x + box.w].astype(np.float32) * np.float32(1 / 255)
    crop = fit_frame(region, size)
    return Portrait(crop=crop, picture=picture, box=box, mask=feather_mask(box.h, box.w)), None
