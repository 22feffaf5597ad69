"""The TFLite engine drops the mapped model pages XNNPACK has copied (issue 6: run's peak memory)."""

import mmap
import sys

import numpy as np
import pytest

from livepuppet.runtime.engines.tflite import release_file_pages


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise on /proc/self/maps is Linux only")
def test_release_file_pages_keeps_the_content(tmp_path):
    path = tmp_path / "model.tflite"
    data = bytes(range(256)) * 4096  # 1 MiB
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as mapped:
        assert mapped[:] == data  # every page resident
        released = release_file_pages(path)
        assert released >= len(data)
        assert mapped[:] == data  # paged in again from the file, unchanged


def test_release_file_pages_of_an_unmapped_file_is_a_no_op(tmp_path):
    path = tmp_path / "other.tflite"
    path.write_bytes(b"x")
    assert release_file_pages(path) == 0


def _resident_kb(path) -> int:
    """Resident kB of every mapping of ``path`` in this process (from /proc/self/smaps)."""
    target, total, inside = str(path.resolve()), 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):  # a mapping's header line
                inside = len(fields) == 6 and fields[5] == target
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise on /proc/self/maps is Linux only")
def test_opened_engine_keeps_no_model_file_resident(tmp_path_factory):
    """Each model is packed by XNNPACK when the engine opens, and its file's pages are dropped right after."""
    from livepuppet.runtime.choose import open_engine
    from tests.test_convert import shared_small_models

    small = shared_small_models(tmp_path_factory)
    engine = open_engine(small.model("zip-fp32-dynamic"), "tflite", threads=1)
    paths = [engine.folder.file(step.variant) for step in engine.plan.steps.values()]
    resident = {p.name: _resident_kb(p) for p in paths}
    print(f"\nresident kB of each model file after opening: {resident}")
    assert all(kb == 0 for kb in resident.values()), resident
    data = engine.encode_source(small.source)  # and the models still run from the released files
    assert np.isfinite(data.features).all() and data.features.std() > 0
