"""Keyboard names for the live preview.

Why a table: ``cv2.waitKeyEx`` returns backend-specific codes. Letters are
ASCII everywhere, but arrow keys are X keysyms on GTK and on Qt under X11
(0xff51..), Qt key codes on some Qt builds (0x1000012..), virtual-key codes
shifted by 16 bits on Windows (0x250000..) and private-use characters on macOS
(0xf702..). The loop only ever sees the names below.

One table, :data:`KEYS`, says what every key does, for the desktop preview
(``run``, listed in ``run --help``) and the browser page alike.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Binding:
    """Keys (as :func:`key_name` names them) -> the action each one does, said once in the help."""

    label: str                # as the help shows the keys
    actions: dict[str, str]   # key name -> action id
    help: str
    page: bool = False        # the browser page does it too (livepuppet/web/static/app.js)


#: The one key table of the desktop preview and the browser page, in the order the help lists it.
#: The page gets its part as keys.json (:func:`page_table`), so a key means the same in both.
KEYS: tuple[Binding, ...] = (
    Binding("c", {"c": "calibrate"}, "recalibrate: your current pose becomes the neutral pose", page=True),
    Binding("b", {"b": "best_moment"}, "best moment: for a few seconds, calibrate on the pose nearest the avatar's"),
    Binding("n / p", {"n": "next_avatar", "p": "previous_avatar"}, "next / previous source avatar"),
    Binding("+ / -", {"+": "zoom_in", "-": "zoom_out"}, "zoom the face crop in / out", page=True),
    Binding("arrows", {"left": "pan_left", "right": "pan_right", "up": "pan_up", "down": "pan_down"},
            "pan the face crop", page=True),
    Binding("0", {"0": "reset_view"}, "reset the crop's zoom and pan", page=True),
    Binding("f", {"f": "face_tracking"}, "face tracking: follow the face, or keep a fixed crop (toggle)", page=True),
    Binding("m", {"m": "mirror"}, "mirror the camera (toggle)"),
    Binding("t", {"t": "pass_through"}, "pass the camera through instead of the avatar (toggle)"),
    Binding("k", {"k": "keypoints"}, "keypoint overlay (toggle)"),
    Binding("r", {"r": "relative"}, "relative motion (toggle)"),
    Binding("a", {"a": "adapt_scale"}, "adapt movement scale (toggle)"),
    Binding("s", {"s": "smoothing"}, "keypoint smoothing (toggle)"),
    Binding("i", {"i": "info"}, "info overlay: fps, latency and per-stage ms (toggle)"),
    Binding("h", {"h": "help"}, "this help (toggle)"),
    Binding("q / Esc", {"q": "quit", "esc": "quit"}, "quit"),
)

#: key name -> action id, for the desktop preview (every binding)
ACTIONS: dict[str, str] = {key: action for b in KEYS for key, action in b.actions.items()}
_LETTERS = "".join(k for k in ACTIONS if len(k) == 1 and k.isalnum())

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


def help_lines(page: bool = False) -> list[str]:
    """The key list as aligned text lines (``page``: the browser page's part only)."""
    shown = [b for b in KEYS if b.page or not page]
    width = max(len(b.label) for b in shown)
    return [f"{b.label.ljust(width)}  {b.help}" for b in shown]


def page_table() -> dict[str, object]:
    """The browser page's keys, as its keys.json: key name -> action id, and the help lines."""
    return {"actions": {key: action for b in KEYS if b.page for key, action in b.actions.items()},
            "help": [[b.label, b.help] for b in KEYS if b.page]}
