"""The TFLite engine drops the mapped model pages XNNPACK has copied (issue 6: run's peak memory)."""

import mmap
import sys

import pytest

from livepuppet.engines.tflite import release_file_pages


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
