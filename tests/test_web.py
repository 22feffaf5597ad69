"""Issue 14: the page that runs the four .tflite models in the browser (LiteRT.js), its server and its export.

The server and export tests need no browser. The page tests run in Debian's
Chromium under Playwright (tests/browser.py), on the SMALL 64x64 model from
tests/test_convert.py's session cache, with a fake camera playing a clip of a
real photograph (skimage's astronaut). The page's output is read back from its
canvas and compared with the Python LiteRT engine on the same frames and model.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from livepuppet.cli import main
from livepuppet.runtime.choose import open_engine
from livepuppet.live.keys import page_table

from livepuppet.media import to_uint8
from livepuppet.runtime.pipeline import Pipeline
from livepuppet.web.page_server import make_server
from livepuppet.web.site import STATIC
from tests import browser
from tests.test_convert import MODEL_NAMES, SmallModels, shared_small_models

MEAN_LEVELS = 2.0  # the bound: page vs Python engine, mean abs difference in 8-bit levels
VERSION = json.loads((STATIC / "vendor" / "VERSION.json").read_text())
needs_browser = pytest.mark.skipif(browser.missing() is not None, reason=browser.missing() or "")


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> SmallModels:
    return shared_small_models(tmp_path_factory)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return browser.write_y4m(tmp_path_factory.mktemp("web") / "clip.y4m", browser.face_frames(30))


@pytest.fixture(scope="module")
def playwright():
    if browser.missing():
        pytest.skip(browser.missing())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def chromium(playwright, clip: Path):
    b = browser.launch(playwright, clip)
    yield b
    b.close()


@pytest.fixture(scope="module")
def chromium_gpu(playwright, clip: Path):
    """Chromium with WebGPU on: here, and on CI, its software adapter (SwiftShader) is the only one."""
    b = browser.launch(playwright, clip, gpu=True)
    yield b
    b.close()


@pytest.fixture(scope="module")
def url(small: SmallModels):
    with browser.serving(make_server(small.model("legacy-fp32-b1"))) as base:
        yield base


def _watched_page(b):
    """A fresh page (and its context) that records console errors and uncaught exceptions in ``page.problems``."""
    context = b.new_context()
    p = context.new_page()
    p.problems = []
    p.on("console", lambda m: m.type == "error" and p.problems.append(m.text))
    p.on("pageerror", lambda e: p.problems.append(str(e)))
    return context, p


@pytest.fixture
def page(chromium):
    context, p = _watched_page(chromium)
    yield p
    context.close()


@pytest.fixture
def gpu_page(chromium_gpu):
    context, p = _watched_page(chromium_gpu)
    yield p
    context.close()


def _material(size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A portrait and n driving frames at the model's size, uint8: the astronaut, still and moving."""
    frames = browser.face_frames(n + 1, 120, 160)[:, :, 20:140]
    small = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    return small[0], small[1:]


def _python_engine(model: Path, source: np.ndarray, driving: np.ndarray) -> np.ndarray:
    """The same frames through the Python LiteRT engine, as uint8 (the page's inputs are x / 255)."""
    pipe = Pipeline(open_engine(model, "tflite", threads=2))
    pipe.set_source(source.astype(np.float32) / np.float32(255))
    return np.stack([to_uint8(pipe.animate(f[None].astype(np.float32) / np.float32(255))[0]) for f in driving])


def _levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


# --------------------------------------------------------------------------- server and export (no browser)


def _get(url: str, gzip_ok: bool = True):
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip_ok else {})
    return urllib.request.urlopen(request, timeout=30)


def test_server_serves_the_page_the_runtime_and_the_model_only(small: SmallModels) -> None:
    model = small.model("legacy-fp32-b1")
    with browser.serving(make_server(model)) as base:
        assert base.startswith("http://127.0.0.1:")
        page = _get(base)
        assert page.headers["Cross-Origin-Opener-Policy"] == "same-origin"  # WebAssembly threads need both
        assert page.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert b'src="app.js"' in page.read()
        assert b"new Worker" in _get(base + "worker_client.js").read()  # the models run in worker.js
        assert b"import('./puppet.js')" in _get(base + "worker.js").read()
        for name, facts in VERSION["wasm"].items():
            zipped = _get(base + "vendor/wasm/" + name)
            assert zipped.headers["Content-Type"] == "application/wasm"
            assert zipped.headers["Content-Encoding"] == "gzip"
            assert hashlib.sha256(gzip.decompress(zipped.read())).hexdigest() == facts["sha256"]
            plain = _get(base + "vendor/wasm/" + name, gzip_ok=False)
            assert plain.headers.get("Content-Encoding") is None and len(plain.read()) == facts["bytes"]
        web = json.loads(_get(base + "model/web.json").read())
        assert web["frame_size"] == [64, 64] and web["num_kp"] == 5
        assert json.loads(_get(base + "keys.json").read()) == page_table()
        assert _get(base + "model/generator.tflite").read() == (model / "generator.tflite").read_bytes()
        # the browser graph's files for WebGPU, as web.json names them (the folder keeps them under web/)
        assert web["webgpu_models"]["generator"] == "webgpu/generator.tflite"
        assert (_get(base + "model/webgpu/generator.tflite").read()
                == (model / "web" / "generator.tflite").read_bytes())
        for bad in ("model/manifest.json", "../pyproject.toml", "vendor/", "%2e%2e/web.py", "web.py"):
            with pytest.raises(urllib.error.HTTPError) as err:
                _get(base + bad)
            assert err.value.code == 404, bad


@pytest.mark.parametrize("key, batch", [("zip-int8-b2", "a batch of 2"), ("zip-fp32-dynamic", "a dynamic batch")])
def test_web_refuses_a_model_of_another_batch(small: SmallModels, capsys: pytest.CaptureFixture[str],
                                              key: str, batch: str) -> None:
    model = small.model(key)
    capsys.readouterr()  # the conversion's own output
    assert main(["web", "--model", str(model), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and batch in err and "--batch 1" in err


def test_web_command_serves_until_stopped(small: SmallModels) -> None:
    """`livepuppet web` as a user runs it: prints its URL, serves the page, stops on SIGTERM without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "livepuppet.cli", "web", "--model", str(small.model("legacy-fp32-b1")),
                             "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, line
        assert b"livepuppet" in _get(found.group(0)).read()
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 130 and "Traceback" not in rest


def test_web_refuses_a_port_it_cannot_use(small: SmallModels, capsys: pytest.CaptureFixture[str]) -> None:
    model = small.model("legacy-fp32-b1")
    capsys.readouterr()
    assert main(["web", "--model", str(model), "--port", "70000"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_export_writes_a_static_folder_and_replaces_only_an_export(small: SmallModels, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "site"
    model = small.model("legacy-fp32-b1")
    capsys.readouterr()  # the conversions' own output
    assert main(["web", "--model", str(model), "--export", str(out)]) == 0
    for name, facts in VERSION["wasm"].items():  # plain .wasm files: any static host serves them
        assert hashlib.sha256((out / "vendor" / "wasm" / name).read_bytes()).hexdigest() == facts["sha256"]
    assert {p.name for p in (out / "model").iterdir()} == {
        "web.json", "kp_detector.tflite", "source_encoder.tflite", "kp_processing.tflite", "generator.tflite", "webgpu"}
    assert {p.name for p in (out / "model" / "webgpu").iterdir()} == {
        "kp_detector.tflite", "source_encoder.tflite", "kp_processing.tflite", "generator.tflite"}
    assert "Cross-Origin-Embedder-Policy: require-corp" in (out / "_headers").read_text()
    assert json.loads((out / "keys.json").read_text()) == page_table()
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"\nstatic export of the SMALL model: {size / 1e6:.1f} MB")
    assert f"({size / 1e6:.1f} MB)" in capsys.readouterr().err
    # Exported again: replaced whole, nothing left beside it.
    (out / "index.html").write_text("an older page")
    assert main(["web", "--model", str(model), "--export", str(out)]) == 0
    assert "an older page" not in (out / "index.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    # A file of the user's in it (a portrait for OBS) is never deleted: the export is refused and says why.
    (out / "face.png").write_bytes(b"portrait")
    assert main(["web", "--model", str(model), "--export", str(out)]) == 2
    assert "holds face.png, which an export did not write" in capsys.readouterr().err
    assert (out / "face.png").read_bytes() == b"portrait"
    # A folder that is not an export is never written into.
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"mine")
    assert main(["web", "--model", str(small.model("legacy-fp32-b1")), "--export", str(other)]) == 2
    assert "not a livepuppet web export" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["keep.jpg"]


# --------------------------------------------------------------------------- the page in Chromium


@needs_browser
@pytest.mark.parametrize("threads", ["auto", "1"])
def test_page_matches_the_python_engine(small: SmallModels, url: str, page, threads: str) -> None:
    source, driving = _material(64, 6)
    hooked = browser.HookedPage(page, f"{url}?test&threads={threads}")
    cores = page.evaluate("navigator.hardwareConcurrency")
    expected_threads = cores if threads == "auto" and cores > 1 else 1
    assert int(page.evaluate("document.body.dataset.threads")) == expected_threads
    assert page.inner_text("#backend") == (f"WebAssembly, {expected_threads} threads" if expected_threads > 1
                                           else "WebAssembly, 1 thread")
    hooked.set_source(source)
    got = np.stack([hooked.drive(f) for f in driving])
    expected = _python_engine(small.model("legacy-fp32-b1"), source, driving)
    err = _levels(got, expected)
    print(f"\npage (threads={threads}) vs Python LiteRT engine: mean {err.mean():.4f} levels, max {err.max()}")
    assert err.mean() <= MEAN_LEVELS
    assert _levels(got[0], got[-1]).mean() > 1  # the frames moved the avatar: not a frozen picture
    assert not page.problems


@needs_browser
def test_convert_web_fp16_served_by_a_plain_static_host(small: SmallModels, tmp_path: Path, page) -> None:
    """`convert --precision fp16 --web OUT`, served by a host that sends no isolation headers:
    the page falls back to one thread and draws what the Python engine draws."""
    out = tmp_path / "site"
    model = tmp_path / "fp16"
    assert main(["convert", str(small.checkpoint("legacy")), "--out", str(model), "--precision", "fp16",
                 "--size", "64x64", "--web", str(out)]) == 0
    web = json.loads((out / "model" / "web.json").read_text())
    assert web["precision"] == "fp16" and web["numerics"] == "original"  # convert's default: the page runs it too
    assert (out / "model" / "generator.tflite").read_bytes() == (model / "generator.tflite").read_bytes()
    quiet = type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda self, *a: None})
    with browser.serving(ThreadingHTTPServer(("127.0.0.1", 0), partial(quiet, directory=str(out)))) as base:
        hooked = browser.HookedPage(page, f"{base}?test")
        assert page.inner_text("#backend") == "WebAssembly, 1 thread (page not cross-origin isolated)"
        source, driving = _material(64, 3)
        hooked.set_source(source)
        got = np.stack([hooked.drive(f) for f in driving])
    err = _levels(got, _python_engine(model, source, driving))
    print(f"\nexported fp16 page vs Python LiteRT engine: mean {err.mean():.4f} levels, max {err.max()}")
    assert err.mean() <= MEAN_LEVELS
    assert not page.problems


def _page_against_python(hooked: browser.HookedPage, model: Path, n: int) -> np.ndarray:
    """The page's frames minus the Python LiteRT engine's on the same portrait and frames, in levels."""
    source, driving = _material(hooked.size[0], n)
    hooked.set_source(source)
    got = np.stack([hooked.drive(f) for f in driving])
    assert _levels(got[0], got[-1]).mean() > 1  # the frames moved the avatar: not a frozen picture
    return _levels(got, _python_engine(model, source, driving))


@needs_browser
def test_page_on_webgpu_runs_every_op_there_and_matches_the_python_engine(small: SmallModels, url: str,
                                                                           gpu_page) -> None:
    """?backend=webgpu on Chromium's software adapter (SwiftShader, here and on CI), which computes what a GPU
    would, op for op: the browser graph's four models each whole on WebGPU by LiteRT.js's own report (its compiled
    model fully accelerated, no op left to WebAssembly), and within 1 level of the Python engine's picture (the
    XNNPACK graph on LiteRT)."""
    hooked = browser.HookedPage(gpu_page, f"{url}?test&backend=webgpu")
    assert gpu_page.evaluate("document.body.dataset.backend") == "webgpu"
    assert gpu_page.inner_text("#backend") == "WebGPU (google swiftshader)"  # no model named as on WebAssembly
    placement = json.loads(gpu_page.evaluate("document.body.dataset.placement"))
    assert placement == {name: {"where": "webgpu"} for name in MODEL_NAMES}, placement
    err = _page_against_python(hooked, small.model("legacy-fp32-b1"), 4)
    print(f"\npage on WebGPU (SwiftShader), the browser graph, vs Python LiteRT engine: mean {err.mean():.4f} "
          f"levels, max {err.max()}; {gpu_page.inner_text('#stages')} ms")
    assert err.max() <= 1
    assert not gpu_page.problems


@needs_browser
def test_keys_are_answered_while_a_frame_renders(url: str, gpu_page, tmp_path: Path) -> None:
    """The models run in a Web Worker: a key pressed while a frame is in the worker is answered (its action
    done) within 50 ms of the key event, by the page's own measure. On WebGPU on SwiftShader a SMALL frame keeps
    the worker busy for longer than that (printed), so the keys land in the middle of frames."""
    portrait = _open_live_page(gpu_page, f"{url}?backend=webgpu", tmp_path)
    gpu_page.set_input_files("#portrait", str(portrait))
    gpu_page.wait_for_function("Number(document.body.dataset.frames) >= 2", timeout=60_000)
    keys = "JSON.parse(document.body.dataset.keys || '{\"count\": 0, \"during\": 0}')"
    for pressed in range(1, 101):
        gpu_page.keyboard.press("0")  # reset the view: harmless to the picture
        gpu_page.wait_for_function(f"{keys}.count >= {pressed}")  # answered
        if gpu_page.evaluate(keys)["during"] >= 10:
            break
    times = gpu_page.evaluate(keys)
    print(f"\n{times['during']} of {times['count']} keys pressed during a frame, answered in at most "
          f"{times['maxDuring']:.1f} ms; frames: {gpu_page.inner_text('#stages')} ms")
    assert times["during"] >= 10
    assert times["maxDuring"] <= 50
    assert not gpu_page.problems


@needs_browser
def test_auto_leaves_a_software_gpu_adapter_alone(url: str, gpu_page) -> None:
    """With only SwiftShader, WebAssembly is faster (benchmarks/README.md): auto stays there and says why."""
    browser.HookedPage(gpu_page, f"{url}?test")
    assert gpu_page.evaluate("document.body.dataset.backend") == "wasm"
    assert gpu_page.inner_text("#backend").startswith("WebAssembly, ")
    assert "software WebGPU adapter (google swiftshader)" in gpu_page.get_attribute("#backend", "title")
    assert not gpu_page.problems


@pytest.mark.gpu
@needs_browser
def test_page_on_a_hardware_gpu(small: SmallModels, url: str, gpu_page) -> None:
    """Needs a GPU that Chromium's WebGPU drives (none on CI or this machine): auto takes it, same picture."""
    hooked = browser.HookedPage(gpu_page, f"{url}?test")
    if gpu_page.evaluate("document.body.dataset.backend") != "webgpu":
        pytest.skip(f"Chromium offers no hardware WebGPU adapter here ({gpu_page.get_attribute('#backend', 'title')})")
    _assert_page_matches_python(hooked, gpu_page, small, 6,
                                f"{gpu_page.inner_text('#backend')}; {gpu_page.inner_text('#stages')} ms")


def _assert_page_matches_python(hooked, page, small: SmallModels, frames: int, label: str) -> None:
    err = _page_against_python(hooked, small.model("legacy-fp32-b1"), frames)
    print(f"\npage on {label} vs Python LiteRT engine: mean {err.mean():.4f} levels, max {err.max()}")
    assert err.mean() <= MEAN_LEVELS
    assert not page.problems


@needs_browser
def test_a_new_portrait_replaces_the_old_one(small: SmallModels, url: str, page) -> None:
    """The source's tensors are kept between frames: a second portrait must replace them, not mix with them."""
    hooked = browser.HookedPage(page, f"{url}?test")
    first, driving = _material(64, 2)
    hooked.set_source(first)
    hooked.drive(driving[0])
    other = np.ascontiguousarray(first[:, ::-1])  # the portrait mirrored
    hooked.set_source(other)
    got = np.stack([hooked.drive(f) for f in driving])
    err = _levels(got, _python_engine(small.model("legacy-fp32-b1"), other, driving))
    print(f"\nsecond portrait vs Python LiteRT engine: mean {err.mean():.4f} levels, max {err.max()}")
    assert err.mean() <= MEAN_LEVELS
    assert not page.problems


@needs_browser
def test_an_unknown_back_end_gets_a_visible_message(url: str, page) -> None:
    page.goto(f"{url}?backend=cuda")
    page.wait_for_function("document.body.dataset.state")
    assert page.evaluate("document.body.dataset.state") == "failed"
    assert 'unknown back end "cuda"' in page.inner_text("#message") and page.is_visible("#message")


def test_the_page_does_every_action_of_its_keys_and_nothing_else() -> None:
    """The page's keys come from livepuppet.live.keys (keys.json); app.js implements exactly those actions and
    names no key itself, so 0 and f cannot drift from the desktop's meaning again."""
    app = (STATIC / "app.js").read_text()
    block = app[app.index("const ACTIONS = {"):app.index("};", app.index("const ACTIONS = {"))]
    assert set(re.findall(r"(\w+): \(app\) =>", block)) == set(page_table()["actions"].values())
    assert "'f'" not in app and " 0:" not in app and "KEYS[" not in app


@needs_browser
def test_calibration_by_key(url: str, page) -> None:
    """After 'c' the next frame is the calibration frame, which drives the portrait to its own pose."""
    source, driving = _material(64, 8)
    hooked = browser.HookedPage(page, f"{url}?test")
    hooked.set_source(source)
    first = hooked.drive(driving[0])  # calibrates on the first frame
    moved = hooked.drive(driving[-1])
    assert _levels(first, moved).mean() > 1
    assert page.evaluate("document.body.dataset.calibrations") == "1"
    assert page.inner_text("#keys").startswith("keys: c recalibrate")  # the help of keys.json
    page.keyboard.press("c")  # bound through keys.json
    assert page.inner_text("#calibrated") == "on the next frame"
    again = hooked.drive(driving[-1])
    assert page.evaluate("document.body.dataset.calibrations") == "2"
    assert page.inner_text("#calibrated") == "at frame 3"
    err = _levels(again, first)
    print(f"\ncalibrated on another frame: {err.mean():.3f} levels from the first calibration's picture")
    assert err.mean() < 0.5
    assert not page.problems


def _open_live_page(page, url: str, tmp_path: Path) -> Path:
    """The live page (fake camera), ready for a portrait; returns a face portrait written for it to pick."""
    portrait = tmp_path / "portrait.png"
    cv2.imwrite(str(portrait), browser.face_frames(1)[0, :, 40:280, ::-1])
    page.goto(url)
    page.wait_for_function("document.body.dataset.state", timeout=120_000)
    return portrait


@needs_browser
def test_page_runs_200_camera_frames(url: str, page, tmp_path: Path) -> None:
    """The live page: fake camera, a picked portrait, 200 avatar frames, fps and stage times, no console error."""
    portrait = _open_live_page(page, url, tmp_path)
    assert page.is_visible("#message") and "pick or drop a portrait" in page.inner_text("#message")
    page.set_input_files("#portrait", str(portrait))
    page.wait_for_function("Number(document.body.dataset.frames) >= 200", timeout=180_000, polling=500)
    assert not page.is_visible("#message")
    assert float(page.evaluate("document.body.dataset.fps")) > 0
    stages = page.inner_text("#stages")
    assert all(stage in stages for stage in ("keypoints", "process", "generate")), stages
    pixels = np.array(page.evaluate(
        "Array.from(document.getElementById('avatar').getContext('2d').getImageData(0, 0, 64, 64).data)"))
    assert pixels.reshape(-1, 4)[:, :3].std() > 5  # a picture, not an empty canvas
    print(f"\n200 camera frames at {page.inner_text('#fps')} fps; {stages} ms; {page.inner_text('#backend')}")
    assert not page.problems, page.problems


@needs_browser
def test_a_runtime_that_dies_mid_stream_gets_a_visible_message(url: str, page, tmp_path: Path) -> None:
    """The models vanish under the live loop (as on a lost GPU device): the page says so instead of going dead."""
    portrait = _open_live_page(page, url, tmp_path)
    page.set_input_files("#portrait", str(portrait))
    page.wait_for_function("Number(document.body.dataset.frames) >= 3", timeout=60_000)
    # the models' worker (not its runtime's thread workers): its runtime is taken away
    (worker,) = [w for w in page.workers if w.url.endswith("/worker.js")]
    worker.evaluate("import('./vendor/litertjs-core.js').then((litert) => litert.unloadLiteRt())")
    page.wait_for_function("document.body.dataset.state === 'failed'", timeout=30_000)
    assert page.is_visible("#message") and "the models stopped" in page.inner_text("#message")
    assert not [p for p in page.problems if "stopped" not in p]


@needs_browser
def test_bad_portrait_gets_a_visible_message(url: str, page, tmp_path: Path) -> None:
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    page.goto(url)
    page.wait_for_function("document.body.dataset.state", timeout=120_000)
    page.set_input_files("#portrait", str(bad))
    page.wait_for_function("document.getElementById('message').textContent.includes('holiday.png')")
    assert page.is_visible("#message")
    assert "not an image this browser can read" in page.inner_text("#message")
    good = tmp_path / "portrait.png"  # the page is still alive: a good portrait animates
    cv2.imwrite(str(good), browser.face_frames(1)[0, :, 40:280, ::-1])
    page.set_input_files("#portrait", str(good))
    page.wait_for_function("Number(document.body.dataset.frames) >= 3", timeout=60_000)
    assert not page.is_visible("#message")
    assert not page.problems


# --------------------------------------------------------------------------- the generator on a server (issue 22)


@needs_browser
def test_page_renders_on_a_server(small: SmallModels, url: str, page) -> None:
    """?server=: keypoints in the page (LiteRT.js), the generator on `livepuppet serve`; lossless frames (png)
    draw what the Python engine draws, and only the two keypoint models are loaded in the page."""
    from tests.remote_kit import serving

    model = small.model("legacy-fp32-b1")
    with serving(model) as served:
        hooked = browser.HookedPage(page, f"{url}?test&server={served.url}&format=png")
        assert "generator on the server ws://127.0.0.1" in page.inner_text("#backend")
        assert set(json.loads(page.evaluate("document.body.dataset.placement"))) == {"kp_detector", "kp_processing"}
        err = _page_against_python(hooked, model, 4)
        stages = page.inner_text("#stages")
    print(f"\npage with the generator on a server vs Python LiteRT engine: mean {err.mean():.4f} levels, "
          f"max {err.max()}; {stages} ms")
    assert err.mean() <= MEAN_LEVELS and "remote" in stages and "server" in stages
    assert "ended after 4 frames" in served.said()
    assert not page.problems


@needs_browser
def test_page_with_a_wrong_token_says_so(small: SmallModels, url: str, page) -> None:
    from livepuppet.remote.server import ServerPolicy
    from tests.remote_kit import serving

    with serving(small.model("legacy-fp32-b1"), ServerPolicy(token="the-right-token-0123")) as served:
        page.goto(f"{url}?server={served.url}&token=guess")
        page.wait_for_function("document.body.dataset.state", timeout=60_000)
        assert page.evaluate("document.body.dataset.state") == "failed"
        assert "wrong token" in page.inner_text("#message") and page.is_visible("#message")
        assert "refused a session from 127.0.0.1" in served.said()
