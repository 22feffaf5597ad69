"""The model folder as a contract: it reads back what convert wrote, opens folders of livepuppet 0.1,
and every command works on a read-only folder without changing a byte of it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from livepuppet.cli import main
from livepuppet.modelfolder.read import read_folder, verify_hashes
from livepuppet.modelfolder.schema import NETWORKS, to_json
from livepuppet.runtime.choose import open_engine
from livepuppet.runtime.pipeline import Pipeline
from tests.test_convert import SmallModels

KEY = "legacy-fp32-b1"


def _animate(engine, small: SmallModels) -> np.ndarray:
    pipe = Pipeline(engine)
    pipe.set_source(small.source[0])
    return pipe.animate(small.driving)


def test_schema_round_trip(small: SmallModels) -> None:
    model = read_folder(small.model(KEY))
    assert json.loads(to_json(model)) == json.loads((small.model(KEY) / "manifest.json").read_text())
    assert verify_hashes(model) == []
    assert model.content_key == hashlib.sha256((small.model(KEY) / "manifest.json").read_bytes()).hexdigest()


def _as_format_1(folder: Path) -> None:
    """Rewrite a folder the way livepuppet 0.1 laid it out: a path per back end under ``models``."""
    model = read_folder(folder)
    doc = json.loads((folder / "manifest.json").read_text())
    models = {}
    for name in NETWORKS:
        sig = doc["signatures"][name]
        lite = model.find(name, "tflite")
        models[name] = {"tflite": lite.files[0].path, "precision": lite.precision, "inputs": sig["inputs"],
                        "outputs": sig["outputs"], "savedmodel": f"savedmodel/{name}"}
    old = {k: v for k, v in doc.items() if k not in ("signatures", "variants", "numerics")}
    old.update(format=1, precision="fp32", models=models, graphs={"tflite": "xnnpack"}, livepuppet_version="0.1.0")
    (folder / "manifest.json").write_text(json.dumps(old))


def test_folder_of_livepuppet_0_1_opens(small: SmallModels, tmp_path: Path) -> None:
    """Migrated in memory: the same files run the same frames; nothing on disk changes."""
    folder = tmp_path / "old"
    shutil.copytree(small.model(KEY), folder)
    _as_format_1(folder)
    before = (folder / "manifest.json").read_bytes()
    model = read_folder(folder)
    assert model.migrated_from == 1 and model.backends() == {"tflite", "savedmodel"}
    got = _animate(open_engine(folder, "tflite"), small)
    want = _animate(open_engine(small.model(KEY), "tflite"), small)
    assert np.array_equal(got, want)
    assert (folder / "manifest.json").read_bytes() == before


def _snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under the folder: mode, size, content hash (files) - what 'byte-identical' means here."""
    out = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else ""
        out[path.relative_to(folder).as_posix()] = (info.st_mode, info.st_size, digest)
    return out


def test_commands_leave_a_read_only_folder_byte_identical(small: SmallModels, tmp_path: Path, user_cache) -> None:
    """run, animate and bench on a read-only folder: they work, and write only into the user's cache.

    (Tests run as root here, which writes through read-only modes: the snapshot is the real check.)"""
    import cv2

    folder = tmp_path / "model"
    shutil.copytree(small.model(KEY), folder)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    before = _snapshot(folder)
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((64, 64, 3), 128, np.uint8))
    clip = tmp_path / "clip"
    clip.mkdir()
    for i in range(3):
        cv2.imwrite(str(clip / f"{i:03d}.png"), np.full((64, 64, 3), 100 + 20 * i, np.uint8))
    from livepuppet.runtime import choose

    choice = choose.cache_file(read_folder(folder))
    choice.unlink(missing_ok=True)  # keyed by content: the session's other copies of this folder share it
    try:
        assert main(["animate", "--model", str(folder), "--source", str(face), "--driving", str(clip),
                     "--output", str(tmp_path / "out") + "/"]) == 0
        assert main(["bench", "--model", str(folder), "--repeats", "1"]) == 0
        assert main(["run", "--model", str(folder), "--source", str(face), "--camera", str(clip / "000.png"),
                     "--no-preview", "--frames", "2", "--record", str(tmp_path / "rec.mp4")]) == 0
    finally:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    assert _snapshot(folder) == before
    assert choice.is_file() and choice.is_relative_to(user_cache)  # the engine choice went to the cache instead
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    os.chmod(folder, 0o755)


def test_the_schema_knows_every_graph() -> None:
    """The manifest's graph names (read without TensorFlow) are the graphs the model can be built in."""
    from livepuppet.fomm.modules.rewrites import GRAPHS
    from livepuppet.modelfolder.schema import GRAPHS as NAMES

    assert set(NAMES) == set(GRAPHS)


def test_a_cache_record_that_is_not_ours_reads_as_empty_and_updates_keep_the_rest(tmp_path: Path) -> None:
    """auto's choices and the ONNX placement are best-effort records: odd, oversized or unreadable ones read as
    empty (the work is done again), and setting one key keeps the others."""
    from livepuppet.runtime.cache import MAX_RECORD_BYTES, read_record, update_record

    path = tmp_path / "record.json"
    assert read_record(None) == {} and read_record(path) == {}
    for odd in ("[1, 2]", "{not json", "[" * 100_000):
        path.write_text(odd)
        assert read_record(path) == {}
    path.write_text('{"a": 1}' + " " * MAX_RECORD_BYTES)
    assert read_record(path) == {}
    path.write_text('{"a": 1}')
    update_record(path, "b", {"x": 2})
    assert read_record(path) == {"a": 1, "b": {"x": 2}}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temporary file left behind
    update_record(tmp_path / "missing" / "record.json", "a", 1)  # a cache that cannot be written is not kept
    assert not (tmp_path / "missing").exists()
