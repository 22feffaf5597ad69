"""Keyboard names for the live preview.

Why a table: ``cv2.waitKeyEx`` returns backend-specific codes. Letters are
ASCII everywhere, but arrow keys are X keysyms on GTK and on Qt under X11
(0xff51..), Qt key codes on some Qt builds (0x1000012..), virtual-key codes
shifted by 16 bits on Windows (0x250000..) and private-use characters on macOS
(0xf702..). The loop only ever sees the names below.
"""

from __future__ import annotations

#: The key list printed at start and shown by the help overlay, in order.
KEY_HELP: tuple[tuple[str, str], ...] = (
    ("c", "recalibrate: your current pose becomes the neutral pose"),
    ("b", "best moment: for a few seconds, calibrate on the pose nearest the avatar's"),
    ("n / p", "next / previous source avatar"),
    ("0", "pass the camera through (toggle)"),
    ("f", "mirror the camera (toggle)"),
    ("+ / -", "zoom the face crop in / out"),
    ("arrows", "pan the face crop"),
    ("k", "keypoint overlay (toggle)"),
    ("r", "relative motion (toggle)"),
    ("a", "adapt movement scale (toggle)"),
    ("s", "keypoint smoothing (toggle)"),
    ("i", "info overlay: fps and per-stage ms (toggle)"),
    ("h", "this help (toggle)"),
    ("q / Esc", "quit"),
)

_LETTERS = "cbnp0fkrasihq"

_SPECIAL: dict[int, str] = {
    27: "esc",
    ord("+"): "+", ord("="): "+",          # '=' is '+' without shift
    ord("-"): "-", ord("_"): "-",
    0xFFAB: "+", 0xFFAD: "-",              # keypad +/- (X keysyms)
    # X keysyms: GTK, and Qt on X11 (nativeVirtualKey)
    0xFF51: "left", 0xFF52: "up", 0xFF53: "right", 0xFF54: "down",
    # Qt::Key codes
    0x1000012: "left", 0x1000013: "up", 0x1000014: "right", 0x1000015: "down",
    # Windows virtual-key codes << 16
    0x250000: "left", 0x260000: "up", 0x270000: "right", 0x280000: "down",
    # macOS (Cocoa private-use function-key characters)
    0xF702: "left", 0xF700: "up", 0xF703: "right", 0xF701: "down",
}


def key_name(code: int) -> str | None:
    """Map a ``cv2.waitKeyEx`` code to a key name, or None for no/unknown key."""
    if code is None or code < 0:
        return None
    if code in _SPECIAL:
        return _SPECIAL[code]
    low = code & 0xFFFF  # GTK puts modifier bits above the keysym
    if low in _SPECIAL:
        return _SPECIAL[low]
    if low < 128 and chr(low).lower() in _LETTERS:
        return chr(low).lower()
    return None


def help_lines() -> list[str]:
    """The key list as aligned text lines."""
    width = max(len(k) for k, _ in KEY_HELP)
    return [f"{k.ljust(width)}  {what}" for k, what in KEY_HELP]
