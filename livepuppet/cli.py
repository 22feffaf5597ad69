"""The ``livepuppet`` command: subcommands, argument parsing, and errors mapped to exit codes.

A :class:`~livepuppet.errors.LivepuppetError` is something the user can fix: it
is printed as one line and the exit code is 2, never with a traceback. Heavy
imports (TensorFlow above all) happen inside the subcommands that need them,
so ``run`` and ``animate`` on the LiteRT engine never load TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence

from livepuppet import __version__
from livepuppet.errors import LivepuppetError, bounded_lines, from_library_io_error, from_os_error, one_line
from livepuppet.runtime.plan import ENGINES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not for users


def _size(text: str) -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    return w, h


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _targets(text: str) -> tuple[str, ...]:
    from livepuppet.errors import LivepuppetError

    from livepuppet.conversion.targets import resolve_targets

    names = tuple(t.strip() for t in text.split(",") if t.strip())
    try:
        resolve_targets(names)
    except LivepuppetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return names


MAX_BATCH = 256  # frames per model call: each holds its own activations (tens of MB at 256x256)


def max_threads() -> int:
    """The most --threads a command takes: beyond a few per core they only cost memory, and tens of
    thousands make LiteRT's thread pool fail to start, then crash."""
    return max(256, 4 * (os.cpu_count() or 1))


def _at_most(limit: Callable[[], int], what: str) -> Callable[[str], int]:
    """An argument type: a positive number up to ``limit()``, refused at parsing rather than by a crash later."""
    def parse(text: str) -> int:
        value = _positive(text)
        if value > limit():
            raise argparse.ArgumentTypeError(f"expected at most {limit()} {what}, got {text!r}")
        return value
    return parse


_threads = _at_most(max_threads, f"threads ({os.cpu_count() or 1} cores here)")
_batch_size = _at_most(lambda: MAX_BATCH, "frames per call")


def _batch(text: str) -> int | None:
    """A batch size up to MAX_BATCH, or 'dynamic' (None)."""
    return None if text == "dynamic" else _batch_size(text)


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="converted model folder (default: the default model in models/)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="auto: the fastest here within 3 levels of fp32, measured once per model and machine "
                        "(default); tflite: LiteRT; openvino: OpenVINO, bf16 where the CPU has it; "
                        "savedmodel: TensorFlow, on a GPU if it sees one; onnx: ONNX Runtime on its best "
                        "provider for --device")
    p.add_argument("--exact", action="store_true", help="float32 everywhere, on any engine (the last level)")
    p.add_argument("--fast", action="store_true",
                   help="the int8 generator of `convert --fast` on OpenVINO: faster, coarser (bench prints its error)")
    from livepuppet.runtime.devices import DEVICES

    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="cpu (default); gpu: an Intel GPU for OpenVINO, the best GPU provider for ONNX Runtime; "
                        "auto: OpenVINO decides, ONNX Runtime's best provider; or an ONNX Runtime provider by name")
    p.add_argument("--threads", type=_threads, help="CPU threads (default: all cores)")


def _motion_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--relative", action=argparse.BooleanOptionalAction, default=True,
                   help="move the source relative to the calibration frame (default: on)")
    p.add_argument("--adapt-scale", action=argparse.BooleanOptionalAction, default=True,
                   help="scale the movement by the source/driving face size ratio (default: on)")


def _remote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", metavar="URL",
                   help="render on a `livepuppet serve` machine (ws://HOST:PORT or wss://...): keypoints run here, "
                        "only they go up, the camera picture never leaves this machine")
    p.add_argument("--token", help="the server's token (default: $LIVEPUPPET_TOKEN)")
    p.add_argument("--remote-format", choices=("jpeg", "png", "raw"), default="jpeg",
                   help="how frames come down: jpeg (default), or lossless png / raw")
    p.add_argument("--remote-quality", type=_quality, default=90, help="JPEG quality 1-100 (default 90)")


def _quality(text: str) -> int:
    value = _positive(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"expected a quality from 1 to 100, got {text!r}")
    return value


def _unit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 (off) to 1 (strongest), got {text!r}")
    return value


def _picture_args(p: argparse.ArgumentParser, smoothing: float, why: str) -> None:
    p.add_argument("--smoothing", type=_unit, default=smoothing,
                   help=f"steady the driving keypoints, 0 (off) to 1 (strongest) (default {smoothing:g}{why})")
    p.add_argument("--paste-back", action=argparse.BooleanOptionalAction, default=None,
                   help="animate a head crop of the portrait and paste it back into the whole picture "
                        "(default: on when the portrait is larger than the crop)")


def _convert_parser(p: argparse.ArgumentParser) -> None:
    from livepuppet.fomm.numerics import DEFAULT, NUMERICS

    p.add_argument("checkpoint", type=Path)
    p.add_argument("--config", help="original YAML config or a preset name (default: read off the checkpoint)")
    p.add_argument("--out", type=Path, help="model folder (default: models/<checkpoint name>)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="the .tflite files': fp32: exact (default); fp16: half-size files, same speed on x86; "
                        "int8: int8 weights, about 2 levels per pixel off (the keypoint detector stays fp32)")
    p.add_argument("--batch", type=_batch, default=1, help="driving frames per call, or 'dynamic' (default 1)")
    p.add_argument("--size", type=_size, help="frame size WxH (default: the config's, 256x256)")
    p.add_argument("--targets", type=_targets, default=("tflite", "openvino"),
                   help="what to write, comma-separated: tflite (LiteRT; also read by OpenVINO), openvino (the "
                        "plain-graph generator with bf16 weights, for AMX CPUs), savedmodel (TensorFlow, for its "
                        "GPU path), onnx (ONNX Runtime), web (the browser graph, for WebGPU), int8 (see --fast); "
                        "default tflite,openvino")
    p.add_argument("--fast", action="store_true",
                   help="also int8 OpenVINO networks, planned by measured error (about a minute more)")
    p.add_argument("--web", type=Path, metavar="OUT", help="also write the static web page for it to folder OUT")
    p.add_argument("--numerics", choices=tuple(NUMERICS), default=DEFAULT,
                   help="how the model samples: original (default): frame-exact with the original code on "
                        "today's PyTorch; trained: as the published weights were trained (PyTorch 1.0, "
                        "align_corners=True)")


def _run_parser(p: argparse.ArgumentParser) -> None:
    from livepuppet.runtime.smoothing import DEFAULT_STRENGTH

    p.add_argument("--source", action="append", required=True, type=Path,
                   help="portrait image, or a folder of them; repeat for several avatars")
    _engine_args(p)
    p.add_argument("--camera", default="0",
                   help="camera index, video file or URL (default 0); a video file plays at its own pace, like a "
                        "camera: frames there is no time for are dropped")
    p.add_argument("--every-frame", action="store_true",
                   help="a video file: animate every frame in order, however long it takes (its fps and latency "
                        "are then the model's, not a camera's)")
    p.add_argument("--camera-size", type=_size, help="capture size WxH")
    p.add_argument("--no-preview", action="store_true", help="no window: feed the virtual camera / recording only")
    p.add_argument("--vcam", action="store_true", help="send the avatar to a virtual camera")
    p.add_argument("--vcam-size", type=_size,
                   help="virtual camera size WxH (default: the portrait's size with paste-back, else 512x512)")
    p.add_argument("--vcam-fps", type=_positive, default=30, help="virtual camera frame rate (default 30)")
    p.add_argument("--record", type=Path, help="also record the avatar to this video file")
    p.add_argument("--frames", type=_positive, help="stop after N avatar frames")
    p.add_argument("--batch", type=_batch_size, default=1, help="camera frames per inference call (default 1)")
    p.add_argument("--no-face-tracking", action="store_true", help="centre crop instead of following the face")
    p.add_argument("--yes", action="store_true", help="answer yes to the download question (for scripts)")
    _remote_args(p)
    _motion_args(p)
    _picture_args(p, DEFAULT_STRENGTH, "; 's' toggles it")


def _animate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, type=Path, help="portrait image")
    p.add_argument("--driving", required=True, type=Path, help="driving video, or a folder of frames")
    p.add_argument("--output", required=True, help="output video (.mp4), or a folder/ for PNG frames")
    _engine_args(p)
    _motion_args(p)
    p.add_argument("--batch", type=_batch_size, default=4, help="frames per inference call (default 4)")
    p.add_argument("--frames", type=_positive, help="animate only the first N frames")
    p.add_argument("--best-frame", action="store_true",
                   help="calibrate on the driving frame whose pose is nearest the source's")
    p.add_argument("--side-by-side", action="store_true", help="write source | driving | result panels")
    _remote_args(p)
    _picture_args(p, 0.0, ", so that the output stays frame-exact")


def _bench_parser(p: argparse.ArgumentParser) -> None:
    _engine_args(p)
    p.add_argument("--batch", type=_batch_size, default=1, help="driving frames per call (default 1)")
    p.add_argument("--repeats", type=_positive, default=5, help="timed runs per stage (default 5)")
    p.add_argument("--json", type=Path, help="also write the results as JSON")


def _download_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="model name (default: vox-adv)")


def _serve_parser(p: argparse.ArgumentParser) -> None:
    _engine_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                       "only; anything else needs --token)")
    p.add_argument("--port", type=int, default=8766, help="port (default 8766; 0: any free one)")
    p.add_argument("--token", help="what clients must present (default: $LIVEPUPPET_TOKEN); at least 16 characters")
    p.add_argument("--certfile", type=Path, help="TLS certificate (PEM), for wss://; or put a reverse proxy in front")
    p.add_argument("--keyfile", type=Path, help="TLS private key (PEM)")
    p.add_argument("--max-sessions", type=_positive, default=4, help="sessions at once; more get 'busy' (default 4)")
    p.add_argument("--idle-timeout", type=_positive, default=30, help="seconds before a silent session is closed "
                                                                      "(default 30)")
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help="a web page origin allowed to connect (https://host:port; repeat; pages on this machine "
                        "always are)")
    p.add_argument("--ray", action="store_true", help="deploy on Ray Serve: one replica per GPU, autoscaled on open "
                                                      "sessions (pip install 'livepuppet[ray]')")
    p.add_argument("--ray-address", help="the Ray cluster to join (default: start a local one)")


def _web_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="converted model folder (default: the default model in models/)")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0: any free one)")
    p.add_argument("--export", type=Path, metavar="OUT", help="write a static folder for any web host instead")


def _run_epilog() -> dict:
    from livepuppet.live.keys import help_lines

    return {"formatter_class": argparse.RawDescriptionHelpFormatter,
            "epilog": "keys in the preview window (the browser page's c, + / -, arrows, 0 and f mean the same):\n  "
                      + "\n  ".join(help_lines())}


# subcommand -> (help, its arguments, the function behind it, its options' class in livepuppet.commands.options)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None] | None, str, str]] = {
    "convert": ("original .pth.tar checkpoint -> a model folder", _convert_parser,
                "livepuppet.commands.convert:convert", "ConvertOptions"),
    "run": ("the live loop: camera -> avatar -> preview / virtual camera", _run_parser,
            "livepuppet.commands.run:run", "RunOptions"),
    "animate": ("a portrait + a driving video -> an animated video", _animate_parser,
                "livepuppet.commands.animate:run", "AnimateOptions"),
    "bench": ("what each stage costs on this machine", _bench_parser, "livepuppet.commands.bench:run", "BenchOptions"),
    "download": ("download a published checkpoint into checkpoint/", _download_parser,
                 "livepuppet.commands.download:download", "DownloadOptions"),
    "doctor": ("what this machine offers livepuppet", None, "livepuppet.commands.doctor:run", "DoctorOptions"),
    "serve": ("render avatars for remote sessions (run --remote, the page's ?server=)", _serve_parser,
              "livepuppet.commands.serve:run", "ServeOptions"),
    "web": ("the animation in a browser page (LiteRT.js), served here or exported", _web_parser,
            "livepuppet.commands.web:run", "WebOptions"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livepuppet", description="Animate a portrait with your webcam (FOMM).")
    parser.add_argument("--version", action="version", version=f"livepuppet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, **(_run_epilog() if name == "run" else {}))
        if add_arguments:
            add_arguments(p)
    return parser


def _command(name: str, args: argparse.Namespace) -> int | None:
    """Run subcommand ``name`` with its typed options; its module is imported only now."""
    from importlib import import_module

    from livepuppet.commands import options

    target, options_class = COMMANDS[name][2:]
    module, func = target.split(":")
    return getattr(import_module(module), func)(getattr(options, options_class).from_namespace(args))


def _terminate(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":  # the live loop installs its own, gentler handler
        signal.signal(signal.SIGTERM, _terminate)
    try:
        needs_tf = args.command == "convert" or (args.command == "bench" and args.model is None)
        if needs_tf or getattr(args, "engine", None) == "savedmodel":
            from livepuppet.quiet import import_tensorflow

            import_tensorflow()  # before any module imports it the noisy way
        return int(_command(args.command, args) or 0)
    except LivepuppetError as exc:
        print(f"livepuppet: error: {bounded_lines(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full disk or a vanished file is the user's to fix, not a bug
        print(f"livepuppet: error: {one_line(str(from_os_error(exc)))}", file=sys.stderr)
        return LivepuppetError.exit_code
    except MemoryError:
        print("livepuppet: error: out of memory; close other programs or use a smaller input", file=sys.stderr)
        return LivepuppetError.exit_code
    except Exception as exc:  # a library's own error for a failed write (full disk) is the user's to fix too
        mapped = from_library_io_error(exc)
        if mapped is None:
            raise
        print(f"livepuppet: error: {one_line(str(mapped))}", file=sys.stderr)
        return mapped.exit_code
    except KeyboardInterrupt:
        print("livepuppet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
