"""Shared test set-up: `tests.reference` importable however pytest is invoked, and a private Xvfb display."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture
def xdisplay():
    """A private Xvfb display for preview-window tests; skipped, with the reason, where Xvfb is missing."""
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        pytest.skip("preview test needs Xvfb and xdotool (apt-get install -y xvfb xdotool x11-apps)")
    r, w = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r) as f:
        display = ":" + f.readline().strip()
    try:
        yield display
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory):
    """The SMALL checkpoints and their converted model folders, each made once per session (see
    tests/test_convert.py's SmallModels); test files share it instead of converting SMALL again."""
    from tests.test_convert import shared_small_models

    return shared_small_models(tmp_path_factory)


@pytest.fixture(autouse=True, scope="session")
def user_cache(tmp_path_factory: pytest.TempPathFactory):
    """Engine choices and compiled models go to a session folder, never to the user's own cache
    (subprocesses inherit it through the environment)."""
    path = tmp_path_factory.mktemp("user-cache")
    saved = os.environ.get("LIVEPUPPET_CACHE")
    os.environ["LIVEPUPPET_CACHE"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("LIVEPUPPET_CACHE", None)
    else:
        os.environ["LIVEPUPPET_CACHE"] = saved
