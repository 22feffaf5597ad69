"""Paste-back: a portrait of any framing is animated as a head crop and pasted back into the whole picture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from livepuppet.media import fit_frame, to_uint8
from livepuppet.live.portrait import MAX_SIZE, frame_portrait

SIZE = (64, 64)


def wide_scene(scale: float = 1.0) -> np.ndarray:
    """The astronaut in a wider room: a picture that is not a tight, centred head shot (float32 RGB)."""
    scene = np.full((600, 900, 3), 0.35, np.float32)
    scene[:, :, 2] = 0.5
    a = astronaut().astype(np.float32) / 255
    scene[60:572, 300:812] = a
    if scale != 1.0:
        scene = cv2.resize(scene, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return scene


def test_paste_back_output_size_outside_and_inside():
    picture = wide_scene()
    portrait, notice = frame_portrait(picture, SIZE)
    assert notice is None and portrait.pasted
    b = portrait.box
    assert b.w == b.h and 0 <= b.x and b.x + b.w <= 900 and b.y + b.h <= 600 and b.w < 600
    # the model sees the head crop, not the whole room
    expected_crop = fit_frame(to_uint8(picture)[b.y:b.y + b.h, b.x:b.x + b.w].astype(np.float32) / 255, SIZE)
    np.testing.assert_allclose(portrait.crop, expected_crop, atol=1e-6)
    pred = np.random.default_rng(0).random((*SIZE, 3), dtype=np.float32)
    out = portrait.paste(pred)
    assert out.shape == picture.shape and out.dtype == np.uint8
    outside = np.ones(picture.shape[:2], bool)
    outside[b.y:b.y + b.h, b.x:b.x + b.w] = False
    np.testing.assert_array_equal(out[outside], to_uint8(picture)[outside])  # away from the crop: the picture
    inner = to_uint8(cv2.resize(pred, (b.w, b.h), interpolation=cv2.INTER_LINEAR))
    full = portrait.mask[..., 0] == 1.0  # inside the feathered border
    assert full.mean() > 0.5
    got = out[b.y:b.y + b.h, b.x:b.x + b.w][full].astype(int)
    assert np.abs(got - inner[full].astype(int)).max() <= 1  # the model's output for the crop
    ring = (portrait.mask[..., 0] > 0.2) & (portrait.mask[..., 0] < 0.8)  # the border blends the two
    region = to_uint8(picture)[b.y:b.y + b.h, b.x:b.x + b.w].astype(int)
    blend = out[b.y:b.y + b.h, b.x:b.x + b.w].astype(int)
    assert ring.any() and np.abs(blend[ring] - region[ring]).mean() > 0 and np.abs(blend[ring] - inner[ring]).mean() > 0


def test_keypoints_map_into_the_whole_picture():
    portrait, _ = frame_portrait(wide_scene(), SIZE)
    b, (h, w) = portrait.box, portrait.picture.shape[:2]
    kp = portrait.keypoints(np.array([[-1.0, -1.0], [1.0, 1.0]]))
    np.testing.assert_allclose((kp + 1) / 2 * [w, h], [[b.x, b.y], [b.x + b.w, b.y + b.h]])


def test_large_picture_is_capped():
    portrait, _ = frame_portrait(wide_scene(2.5), SIZE)  # 2250x1500
    h, w = portrait.picture.shape[:2]
    assert w <= MAX_SIZE[0] and h <= MAX_SIZE[1] and portrait.paste(portrait.crop).shape == (h, w, 3)


def test_no_face_falls_back_with_a_notice():
    plain = np.random.default_rng(1).random((300, 400, 3), dtype=np.float32) * 0.1 + 0.4
    portrait, notice = frame_portrait(plain, SIZE)
    assert not portrait.pasted and notice and "\n" not in notice and "no face" in notice
    np.testing.assert_array_equal(portrait.crop, fit_frame(plain, SIZE))
    pred = np.zeros((*SIZE, 3), np.float32)
    assert portrait.paste(pred) is pred  # today's behaviour: the model's output as it is


@pytest.mark.parametrize("paste_back, pasted", [(None, False), (True, True), (False, False)])
def test_head_shot_needs_no_paste_back_unless_asked(paste_back, pasted):
    a = astronaut().astype(np.float32) / 255
    b = frame_portrait(a, SIZE)[0].box
    head = a[b.y:b.y + b.h, b.x:b.x + b.w]  # framed by the crop rule already: the crop is the whole picture
    portrait, notice = frame_portrait(head, SIZE, paste_back)
    assert portrait.pasted is pasted and notice is None
