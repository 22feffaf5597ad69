"""``livepuppet doctor``: one table of what this machine offers livepuppet.

Versions, cameras, the virtual camera back end, models and checkpoints, the
GPUs TensorFlow sees, ONNX Runtime's providers, and where the onnx engine ran
each model's ops (recorded in the model folder when it ran). Nothing here is allowed to fail the command or make
it slow: TensorFlow (seconds to import) and camera probing (a driver can hang)
run in subprocesses, started first and waited for last, each with a time
limit; every other probe only reads files and package metadata. The exit code
is 0 whatever is found: doctor reports, the other commands complain.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from livepuppet.commands.options import DoctorOptions
from livepuppet import __version__
from livepuppet.live.cameras import CameraNode, video_nodes

TF_TIMEOUT_S = 30.0
CAMERA_TIMEOUT_S = 5.0
CAMERA_PROBE = range(5)  # cv2.VideoCapture indices tried

V4L2LOOPBACK_STEP = ("sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback devices=1 "
                     "exclusive_caps=1 card_label=livepuppet")
MODPROBE_STEP = "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=livepuppet"
PYVIRTUALCAM_STEP = "pip install pyvirtualcam"
OBS_STEP = ("install OBS Studio (https://obsproject.com), click 'Start Virtual Camera' once, "
            "then stop it and close OBS")

OK, WARN, BAD = "green", "yellow", "red"

# Run as `python -c`: print one JSON line, whatever TensorFlow logs on stderr.
_TF_SCRIPT = r"""
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
gpus = []
for d in tf.config.list_physical_devices("GPU"):
    try:
        name = tf.config.experimental.get_device_details(d).get("device_name") or d.name
    except Exception:
        name = d.name
    gpus.append(name)
print(json.dumps({"version": tf.__version__, "gpus": gpus, "cuda": bool(tf.test.is_built_with_cuda())}))
"""

_CAMERA_SCRIPT = r"""
import json, sys
import cv2
try:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
except Exception:
    pass
found = []
for i in json.loads(sys.argv[1]):
    cap = cv2.VideoCapture(i, cv2.CAP_V4L2) if sys.platform.startswith("linux") else cv2.VideoCapture(i)
    if cap.isOpened():
        found.append(i)
    cap.release()
print(json.dumps(found))
"""


@dataclass
class Row:
    check: str
    result: str
    style: str = OK


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    sections: list[int] = field(default_factory=list)  # row indices that start a new section
    steps: list[tuple[str, list[str]]] = field(default_factory=list)  # (what, commands) printed below

    def section(self) -> None:
        self.sections.append(len(self.rows))

    def add(self, check: str, result: str, style: str = OK) -> None:
        self.rows.append(Row(check, result, style))


# --------------------------------------------------------------------------- subprocess probes


class _Probe:
    """A ``python -c`` subprocess whose last stdout line is JSON, read back with a deadline."""

    def __init__(self, script: str, *args: str, timeout: float) -> None:
        self.timeout = timeout
        self.started = time.monotonic()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def result(self) -> tuple[object | None, str]:
        """(parsed JSON, '') on success, else (None, a few words on why not)."""
        left = max(0.1, self.timeout - (time.monotonic() - self.started))
        try:
            out, err = self.proc.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return None, f"no answer within {self.timeout:g} s"
        lines = [ln for ln in out.splitlines() if ln.strip()]
        if self.proc.returncode == 0 and lines:
            try:
                return json.loads(lines[-1]), ""
            except ValueError:
                pass
        tail = [ln.strip() for ln in err.splitlines() if ln.strip()]
        return None, (tail[-1] if tail else f"exit code {self.proc.returncode}")[:200]

    def cancel(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


# --------------------------------------------------------------------------- small helpers


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _read(path: Path | str) -> str:
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


def _linux() -> bool:
    return sys.platform.startswith("linux")


# --------------------------------------------------------------------------- sections


def _versions(report: Report, tf: _Probe | None) -> dict | None:
    report.add("livepuppet", __version__)
    report.add("Python", f"{platform.python_version()} ({sys.executable})")
    report.add("system", f"{platform.system()} {platform.release()} {platform.machine()}, "
                         f"{os.cpu_count() or '?'} CPU cores")

    tf_info = None
    if tf is None:
        report.add("TensorFlow", "not installed (needed by `convert` and --engine savedmodel: "
                                 "pip install tensorflow)", WARN)
    else:
        tf_info, why = tf.result()
        if isinstance(tf_info, dict):
            report.add("TensorFlow", str(tf_info.get("version", "?")))
        else:
            tf_info = None
            version = _dist_version("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-macos") or "?"
            report.add("TensorFlow", f"{version}, but it does not import: {why}", BAD)

    litert = _dist_version("ai-edge-litert", "ai-edge-litert-nightly")
    if litert and _has_module("ai_edge_litert"):
        report.add("LiteRT", f"{litert} (ai_edge_litert)")
    else:
        report.add("LiteRT", "not installed (the tflite engine falls back to TensorFlow's copy: "
                             "pip install ai-edge-litert)", WARN)

    for label, module, dists, hint in (
        ("OpenCV", "cv2", ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                           "opencv-contrib-python-headless"), "pip install opencv-python"),
        ("numpy", "numpy", ("numpy",), "pip install numpy"),
    ):
        version = _dist_version(*dists) if _has_module(module) else None
        if version is None and _has_module(module):
            try:
                version = getattr(__import__(module), "__version__", "?")
            except Exception as exc:  # noqa: BLE001 - a broken install is a finding, not a crash
                report.add(label, f"installed, but it does not import: {exc}", BAD)
                continue
        report.add(label, version or f"not installed ({hint})", OK if version else BAD)
    return tf_info


def _camera_probe() -> tuple[_Probe | None, list[CameraNode]]:
    """Start the cv2 probe (indices 0..4 that exist, all of them off Linux)."""
    if _linux():
        nodes = video_nodes()
        indices = [num for num, _name, _virtual in nodes if num in CAMERA_PROBE]
    else:
        nodes, indices = [], list(CAMERA_PROBE)
    if not indices or not _has_module("cv2"):
        return None, nodes
    return _Probe(_CAMERA_SCRIPT, json.dumps(indices), timeout=CAMERA_TIMEOUT_S), nodes


def _cameras(report: Report, probe: _Probe | None, nodes: list[CameraNode]) -> None:
    opened: list[int] | None = None
    why = ""
    if probe is not None:
        result, why = probe.result()
        opened = [int(i) for i in result] if isinstance(result, list) else None

    if _linux():
        if not nodes:
            report.add("cameras", "none found (no /dev/video* device); plug one in, "
                                  "or pass a video file with --camera PATH", WARN)
            return
        parts = []
        for num, name, virtual in nodes:
            text = f"{num}" + (f" ({name})" if name else "") + (" virtual" if virtual else "")
            if opened is not None and num in CAMERA_PROBE:
                text += ", opens" if num in opened else ", does not open (busy?)"
            parts.append(text)
        note = f"; probe: {why}" if probe is not None and opened is None else ""
        report.add("cameras", "; ".join(parts) + note)
        return
    if opened:
        report.add("cameras", ", ".join(str(i) for i in opened) + " (pick one with --camera INDEX)")
    elif opened is None and probe is not None:
        report.add("cameras", f"unknown: probing indices 0..4 failed ({why})", WARN)
    else:
        report.add("cameras", "none found (indices 0..4); plug one in, check camera permissions, "
                              "or pass a video file with --camera PATH", WARN)


def _modinfo_v4l2loopback() -> bool:
    exe = shutil.which("modinfo") or next((p for p in ("/sbin/modinfo", "/usr/sbin/modinfo")
                                          if os.access(p, os.X_OK)), None)
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "v4l2loopback"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=3)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _loopback_devices() -> list[str]:
    """'/dev/videoN (name)' for each v4l2loopback device."""
    found = []
    for node in sorted(glob.glob("/sys/devices/virtual/video4linux/video*")):
        name = _read(Path(node) / "name")
        found.append(f"/dev/{os.path.basename(node)}" + (f" ({name})" if name else ""))
    return found


def _virtual_camera(report: Report) -> None:
    pvc = _dist_version("pyvirtualcam") if _has_module("pyvirtualcam") else None
    steps: list[str] = []
    if _linux():
        devices = _loopback_devices()
        if devices:
            backend = "v4l2loopback: " + ", ".join(devices)
        elif Path("/sys/module/v4l2loopback").exists():
            backend = "v4l2loopback is loaded but has no device"
            steps.append(f"sudo modprobe -r v4l2loopback && {MODPROBE_STEP}")
        elif _modinfo_v4l2loopback():
            backend = "v4l2loopback is installed but not loaded"
            steps.append(MODPROBE_STEP)
        else:
            backend = "no v4l2loopback device"
            steps.append(V4L2LOOPBACK_STEP)
    else:
        backend = "OBS Virtual Camera (not checked)"
        if pvc is None:
            steps.append(OBS_STEP)
    if pvc is None:
        steps.insert(0, PYVIRTUALCAM_STEP)
    package = f"pyvirtualcam {pvc}" if pvc else "pyvirtualcam not installed"
    if steps:
        report.add("virtual camera", f"not available: {package}; {backend} (set-up below)", WARN)
        report.steps.append(("To set up the virtual camera (for --vcam):", steps))
    else:
        report.add("virtual camera", f"available: {package}; {backend}")


def _gpu(report: Report, tf_installed: bool, tf_info: dict | None) -> None:
    if not tf_installed:
        report.add("GPU (TensorFlow)", "unknown: TensorFlow is not installed; the tflite engine runs on the CPU",
                   WARN)
    elif tf_info is None:
        report.add("GPU (TensorFlow)", "unknown: TensorFlow did not answer (see above)", WARN)
    elif tf_info.get("gpus"):
        report.add("GPU (TensorFlow)", ", ".join(map(str, tf_info["gpus"])) + " (used by --engine savedmodel)")
    else:
        built = "" if tf_info.get("cuda") else "; this TensorFlow is built without CUDA"
        report.add("GPU (TensorFlow)", f"none{built}; the tflite and openvino engines run on the CPU", WARN)


def _openvino(report: Report) -> None:
    """OpenVINO's version and devices, and the precision this CPU gets (``--engine openvino`` / ``auto``)."""
    from livepuppet.runtime import cpu as cpumod
    from livepuppet.runtime.engines.openvino import devices

    version = _dist_version("openvino")
    if version is None or not _has_module("openvino"):
        report.add("OpenVINO", "not installed (--engine auto uses LiteRT alone: pip install openvino)", WARN)
        return
    found = devices()
    unit = cpumod.current().matrix_unit
    report.add("OpenVINO", f"{version}; devices {', '.join(found) or 'none'}; CPU precision "
                           f"{cpumod.current().fast_precision()}{f' ({unit})' if unit else ''}"
                           + ("; --device gpu available" if any(d.startswith("GPU") for d in found) else ""))


def _onnx(report: Report) -> None:
    """ONNX Runtime's build and its providers, in livepuppet's preference order, and what ``--device`` picks."""
    from livepuppet.runtime import devices as onnx
    from livepuppet.runtime.plan import RUNTIME_PACKAGES

    versions = [f"{name} {v}" for name in RUNTIME_PACKAGES["onnx"] if (v := _dist_version(name))]
    if not versions or not _has_module("onnxruntime"):
        report.add("ONNX Runtime", f"not installed (--engine onnx: {onnx.INSTALL})", WARN)
        return
    offered = onnx.available()
    gpus = [p.label for p in offered if p.gpu]
    picks = f"--device auto runs {offered[0].label}" + (f", gpu {gpus[0]}" if gpus else
                                                          "; no GPU provider in this build (README, 'GPUs')")
    report.add("ONNX Runtime", f"{', '.join(versions)}; providers {', '.join(p.label for p in offered)}; {picks}",
               OK if gpus else WARN)


def _onnx_placement(folder) -> list[str]:
    """What ran where, as the onnx engine recorded it for ``folder`` (a ModelFolder; one line per provider)."""
    from livepuppet.runtime.engines import onnx

    lines = []
    for provider, models in sorted(onnx.read_placement(folder).items()):
        label = onnx.BY_NAME[provider].label if provider in onnx.BY_NAME else provider
        if not isinstance(models, dict):
            continue
        if all(isinstance(p, dict) and list(p) == [label] for p in models.values()):
            lines.append(f"ONNX on {label}: every op of the {len(models)} models there")
        else:
            lines.append(f"ONNX on {label}: " + "; ".join(f"{m} {onnx.describe_placement(p)}"
                                                          for m, p in models.items() if isinstance(p, dict)))
    return lines


def _models(report: Report) -> None:
    from livepuppet.modelfolder.read import read_folder
    from livepuppet.modelfolder.schema import MANIFEST
    from livepuppet.paths import HOME_ENV, PARTIAL_SUFFIX, checkpoint_dir, home_and_reason, models_dir

    default_name, default_file = None, None
    try:
        from livepuppet.commands.convert import model_name
        from livepuppet.hub.registry import get_entry

        entry = get_entry()
        default_name, default_file = model_name(Path(entry.filename)), entry.filename
        report.add("default model", f"{entry.name} ({entry.filename})")
    except Exception as exc:  # noqa: BLE001 - a broken registry file is a finding
        report.add("default model", f"registry error: {exc}", BAD)

    home, why = home_and_reason()
    report.add("data folders", f"{home} ({why}); set ${HOME_ENV} to move them")
    folder = models_dir()
    found = []
    for sub in sorted(p for p in _listdir(folder) if p.is_dir() and not p.name.startswith(".")):
        if not (sub / MANIFEST).is_file():
            continue
        mark = " (default)" if sub.name == default_name else ""
        try:
            m = read_folder(sub)
            h, w = m.frame_size
            batch = m.batch if m.batch is not None else "dynamic"
            found.append((f"{sub.name}{mark}: {w}x{h}, batch {batch}, {m.num_kp} keypoints; "
                          f"{', '.join(sorted(m.backends()))}; {m.total_bytes() / 1e6:.0f} MB", OK))
            found += [(f"  {line}", OK) for line in _onnx_placement(m)]
        except Exception as exc:  # noqa: BLE001 - a damaged folder is a finding
            found.append((f"{sub.name}{mark}: unusable ({exc})", BAD))
    if found:
        report.add("models", f"in {folder}:", OK)
        for text, style in found:
            report.add("", text, style)
    else:
        report.add("models", f"none in {folder}; `livepuppet run` converts the default model on first use", WARN)

    folder = checkpoint_dir()
    files = sorted(p for p in _listdir(folder) if p.is_file() and not p.name.startswith("."))
    ckpts = []
    for p in files:
        size = p.stat().st_size
        if p.name.endswith(PARTIAL_SUFFIX):
            ckpts.append(f"{p.name}: unfinished download, {_mb(size)} (`livepuppet download` resumes it)")
        elif p.name.endswith((".tar", ".pth", ".pt", ".ckpt")):
            mark = " (default)" if p.name == default_file else ""
            ckpts.append(f"{p.name}{mark}: {_mb(size)}")
    if ckpts:
        report.add("checkpoints", f"in {folder}:")
        for text in ckpts:
            report.add("", text, WARN if "unfinished" in text else OK)
    else:
        report.add("checkpoints", f"none in {folder}; `livepuppet download` fetches the default one", WARN)


def _listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


# --------------------------------------------------------------------------- the command


def _guard(report: Report, check: str, fn: Callable[[], object]) -> object:
    """Run one probe; a crash becomes a red row, never a failed doctor."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        report.add(check, f"probe failed: {type(exc).__name__}: {exc}", BAD)
        return None


def collect() -> Report:
    report = Report()
    tf_installed = _has_module("tensorflow")
    # The slow probes start first and run while the quick ones read files.
    tf = _Probe(_TF_SCRIPT, timeout=TF_TIMEOUT_S) if tf_installed else None
    cam = _guard(report, "cameras", _camera_probe)
    cam_probe, nodes = cam if isinstance(cam, tuple) else (None, [])
    try:
        report.section()
        tf_info = _guard(report, "versions", lambda: _versions(report, tf))
        report.section()
        _guard(report, "cameras", lambda: _cameras(report, cam_probe, nodes))
        _guard(report, "virtual camera", lambda: _virtual_camera(report))
        _guard(report, "GPU (TensorFlow)",
               lambda: _gpu(report, tf_installed, tf_info if isinstance(tf_info, dict) else None))
        _guard(report, "OpenVINO", lambda: _openvino(report))
        _guard(report, "ONNX Runtime", lambda: _onnx(report))
        report.section()
        _guard(report, "models", lambda: _models(report))
    finally:
        for probe in (tf, cam_probe):
            if probe is not None:
                probe.cancel()
    return report


def render(report: Report, console: Console) -> None:
    table = Table(title="livepuppet doctor", title_justify="left", show_header=True, header_style="bold")
    table.add_column("check", no_wrap=True, style="bold")
    table.add_column("found", overflow="fold")
    for i, row in enumerate(report.rows):
        if i in report.sections and i > 0:
            table.add_section()
        table.add_row(Text(row.check), Text(row.result, style=row.style))
    console.print(table)
    for what, commands in report.steps:
        console.print(Text(what, style="bold"))
        for command in commands:
            console.print(Text("  " + command), soft_wrap=True)


def run(args: DoctorOptions | None = None) -> int:  # noqa: ARG001 - no options yet
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 120))  # a log, not a window
    render(collect(), console)
    return 0
