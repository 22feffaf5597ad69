"""Hostile checkpoints built by hand: every declared size, count and depth is checked against the file.

Each file here is a few hundred bytes that once made the reader use gigabytes, hang, raise a traceback or
change the reader itself. Each must now give one CheckpointError line, fast and in little memory.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from livepuppet.fomm import checkpoint as ckmod  # noqa: E402
from livepuppet import cli  # noqa: E402
from livepuppet.fomm.checkpoint import load_checkpoint  # noqa: E402
from livepuppet.errors import CheckpointError  # noqa: E402

PEAK_LIMIT = 64 << 20  # bytes Python and numpy may hold while refusing a hostile file
TIME_LIMIT = 10.0  # seconds; a hang or an exponential hash would take hours


class _Storage:
    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, key: str, numel: int, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (_Storage(key, numel), offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


def _pickle_state(gen: dict, kp: dict | None = None) -> bytes:
    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _Storage):
                return ("storage", torch.FloatStorage, o.key, "cpu", o.numel)
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"generator": gen, "kp_detector": kp or {}})
    return buf.getvalue()


def _zip(path: Path, pkl: bytes, storages: dict[str, bytes] | None = None, method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        zf.writestr("x/data.pkl", pkl)
        for key, data in (storages or {}).items():
            zf.writestr(f"x/data/{key}", data)
    return path


def _legacy(path: Path, pkl: bytes) -> Path:
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    path.write_bytes(buf.getvalue() + pkl)
    return path


def _refused_bounded(path: Path) -> str:
    """Load a hostile file: one CheckpointError line, within the time and memory limits."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    assert elapsed < TIME_LIMIT and peak < PEAK_LIMIT, (elapsed, peak, message)
    return message


def _ops(*parts: bytes) -> bytes:
    return b"\x80\x02" + b"".join(parts) + b"."


# --- 1. tiny files that declare gigabytes or endless work ---------------------------------------------


def test_memo_index_in_the_billions(tmp_path: Path) -> None:
    pkl = _ops(b"}", b"r" + struct.pack("<I", 3_000_000_000))
    assert "memo index" in _refused_bounded(_zip(tmp_path / "memo.pth", pkl))


def test_zero_stride_over_a_huge_shape(tmp_path: Path) -> None:
    pkl = _pickle_state({"w": _Tensor("0", 1, 0, (2**32,), (0,))})
    message = _refused_bounded(_zip(tmp_path / "stride.pth", pkl, {"0": bytes(4)}))
    assert "declare" in message


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA])
def test_compressed_member_is_refused(tmp_path: Path, method: int) -> None:
    """A bzip2 member of a few KB can expand to 4 GB; torch.save never compresses, so none is read."""
    pkl = _pickle_state({"w": _Tensor("0", 2**28, 0, (2**28,), (1,))})
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x/data.pkl", pkl)
        zf.writestr(zipfile.ZipInfo("x/data/0"), bytes(2**20), compress_type=method)  # 1 MiB of zeros
    assert path.stat().st_size < 20_000
    message = _refused_bounded(path)
    assert "compressed" in message or "declare" in message


def _nested_tuple_key(levels: int) -> bytes:
    """A dict key of nested tuples, each level holding the one below twice: hash and repr cost 2**levels."""
    parts = [b")", b"q\x00"]  # empty tuple, memo 0
    for i in range(1, levels):
        parts += [b"h" + bytes([i - 1]), b"h" + bytes([i - 1]), b"\x86", b"q" + bytes([i])]
    return _ops(b"}", *parts, b"K\x01", b"s")


@pytest.mark.parametrize("wrap", [_zip, _legacy], ids=["zip", "legacy"])
def test_exploding_key_hash_does_not_hang(tmp_path: Path, wrap) -> None:
    pkl = _nested_tuple_key(100)
    assert len(pkl) < 1000
    assert "dict key" in _refused_bounded(wrap(tmp_path / "hash.pth", pkl))


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    pkl = _ops(b"(" * 10_000, b"K\x01", b"l" * 10_000)
    assert "nests deeper" in _refused_bounded(_zip(tmp_path / "deep.pth", pkl))


def test_set_copies_are_bounded_by_the_file(tmp_path: Path) -> None:
    """REDUCE(set, (memo'd big list,)) repeated: each 4 bytes would copy the whole list."""
    big = b"](" + b"K\x01" * 5000 + b"eq\x00"  # a list of 5000 ints, memo 0
    call = b"c__builtin__\nset\nh\x00\x85R0"  # set(memo[0]), then POP
    pkl = _ops(big, call * 2000, b"}")
    assert "copies more" in _refused_bounded(_zip(tmp_path / "copies.pth", pkl))


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x96", b"\x95", b"\x8d"],
                         ids=["BINBYTES8", "BYTEARRAY8", "FRAME", "BINUNICODE8"])
@pytest.mark.parametrize("wrap", [_zip, _legacy], ids=["zip", "legacy"])
def test_huge_length_fields(tmp_path: Path, opcode: bytes, wrap) -> None:
    pkl = b"\x80\x04" + opcode + struct.pack("<Q", 2**62) + b"xyz."
    message = _refused_bounded(wrap(tmp_path / "len.pth", pkl))
    assert "truncated or corrupt" in message or "out-of-band" in message


def test_empty_tensor_with_a_huge_offset_or_shape(tmp_path: Path) -> None:
    for i, (offset, size) in enumerate([(2**62, (0, 3)), (0, (0, 2**40, 2**40))]):
        pkl = _pickle_state({"w": _Tensor("0", 1, offset, size, (1,) * len(size))})
        _refused_bounded(_zip(tmp_path / f"empty{i}.pth", pkl, {"0": bytes(4)}))


def test_flipped_byte_in_a_real_checkpoint_stays_bounded(tmp_path: Path) -> None:
    """Every single-byte change to the pickle of a real checkpoint loads or fails in one line, in bounded memory."""
    gen = {"w": torch.randn(4, 3), "b": torch.randn(4)}
    good = tmp_path / "good.pth"
    torch.save({"generator": gen, "kp_detector": {"k": torch.randn(2)}}, good, _use_new_zipfile_serialization=False)
    data = good.read_bytes()
    for pos in range(len(_legacy_header()), len(data) - 60):
        for value in (0xFF, 0x7F):
            bad = bytearray(data)
            bad[pos] = value
            path = tmp_path / "flip.pth"
            path.write_bytes(bytes(bad))
            try:
                tracemalloc.start()
                load_checkpoint(path)
            except CheckpointError as e:
                assert "\n" not in str(e) and len(str(e)) < 300
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            assert peak < PEAK_LIMIT, (pos, value, peak)


def _legacy_header() -> bytes:
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001):
        pickle.dump(header, buf, protocol=2)
    return buf.getvalue()


# --- 2. damaged zip entries: one line, never a traceback -------------------------------------------------


def _good_zip(path: Path) -> Path:
    torch.save({"generator": {"w": torch.randn(8)}, "kp_detector": {}}, path)
    return path


def _patch_central(data: bytearray, name_part: bytes, offset: int, value: bytes) -> None:
    """Overwrite a field of every central and local header whose name contains ``name_part``."""
    for sig, name_at in ((b"PK\x01\x02", 46), (b"PK\x03\x04", 30)):
        pos = data.find(sig)
        while pos >= 0:
            name_len = struct.unpack_from("<H", data, pos + (28 if sig == b"PK\x01\x02" else 26))[0]
            if name_part in data[pos + name_at:pos + name_at + name_len]:
                field = offset + (2 if sig == b"PK\x01\x02" else 0)
                data[pos + field:pos + field + len(value)] = value
            pos = data.find(sig, pos + 4)


@pytest.mark.parametrize("field,value,expected", [
    (6, struct.pack("<H", 1), "encrypted"),  # general-purpose flag bit 0
    (8, struct.pack("<H", 9), "compressed"),  # method 9 (deflate64)
    (8, struct.pack("<H", 99), "compressed"),  # method 99 (AES)
], ids=["encrypted", "method9", "method99"])
def test_odd_zip_entries(tmp_path: Path, field: int, value: bytes, expected: str) -> None:
    data = bytearray(_good_zip(tmp_path / "ok.pth").read_bytes())
    _patch_central(data, b"data.pkl", field, value)
    path = tmp_path / "odd.pth"
    path.write_bytes(bytes(data))
    assert expected in _refused_bounded(path)


def test_invalid_utf8_zip_name(tmp_path: Path) -> None:
    data = bytearray(_good_zip(tmp_path / "ok.pth").read_bytes())
    _patch_central(data, b"data.pkl", 6, struct.pack("<H", 0x800))  # names are UTF-8...
    data = data.replace(b"data.pkl", b"data\xff\xfekl")  # ...but are not
    path = tmp_path / "utf.pth"
    path.write_bytes(bytes(data))
    _refused_bounded(path)


def test_corrupt_deflate_data(tmp_path: Path) -> None:
    path = tmp_path / "deflate.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x/data.pkl", _pickle_state({}))
    data = bytearray(path.read_bytes())
    data[40:60] = b"\xff" * 20
    path.write_bytes(bytes(data))
    _refused_bounded(path)


# --- 6. a BUILD opcode cannot change the reader ---------------------------------------------------------


def test_build_on_a_reader_helper_is_refused(tmp_path: Path) -> None:
    before = ckmod._rebuild_tensor.__defaults__, dict(ckmod._rebuild_tensor.__dict__)
    state = b"N}X\x0c\x00\x00\x00__defaults__K\x01\x85s\x86"  # (None, {'__defaults__': (1,)})
    pkl = _ops(b"ctorch._utils\n_rebuild_tensor_v2\n", state, b"b0}")
    assert "sets attributes" in _refused_bounded(_zip(tmp_path / "build.pth", pkl))
    assert (ckmod._rebuild_tensor.__defaults__, dict(ckmod._rebuild_tensor.__dict__)) == before


# --- the command boundary: exit 2, one line, no traceback ------------------------------------------------


def test_convert_of_hostile_files_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    files = [
        _zip(tmp_path / "memo.pth", _ops(b"}", b"r" + struct.pack("<I", 3_000_000_000))),
        _legacy(tmp_path / "hash.pth", _nested_tuple_key(100)),
        _zip(tmp_path / "long.pth", b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"."),
        _zip(tmp_path / "bigkey.pth", pickle.dumps({"x" * 100_000: 1, "generator": {}}, protocol=2)),
        _zip(tmp_path / "bigname.pth", _ops(b"c" + b"m" * 100_000 + b"\nsystem\n", b"}")),
    ]
    for path in files:
        assert cli.main(["convert", str(path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and len(err) < 320, err
        assert not (tmp_path / "out").exists()


def test_error_lines_are_capped() -> None:
    from livepuppet.errors import MAX_LINE, bounded_lines, one_line

    assert len(one_line("x" * 94_000)) == MAX_LINE
    assert one_line("a\nb\r\nc") == "a b c"
    listed = bounded_lines("\n".join(["y" * 1000] * 50))
    assert listed.count("\n") == 7 and all(len(line) <= MAX_LINE for line in listed.splitlines())
