"""The torch-free checkpoint reader against files written by the real torch.save."""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from livepuppet.fomm.checkpoint import Checkpoint, load_checkpoint  # noqa: E402
from livepuppet.errors import CheckpointError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FORMATS = pytest.mark.parametrize("zipped", [False, True], ids=["legacy", "zip"])


def _state_dicts() -> tuple[dict, dict]:
    """Small state dicts covering every layout the reader must undo."""
    torch.manual_seed(0)
    gen = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).state_dict()
    gen["1.num_batches_tracked"] += 7
    gen["transposed"] = torch.randn(3, 5).t()  # non-contiguous
    gen["offset_view"] = torch.arange(30, dtype=torch.float64)[7:19].view(3, 4)  # storage offset
    gen["strided"] = torch.randn(4, 6)[::2, 1::3]  # offset and strides
    gen["half"] = torch.randn(2, 3).half()
    gen["bf16"] = torch.randn(5).bfloat16()
    gen["scalar"] = torch.tensor(2.5)
    gen["empty"] = torch.zeros(0, 3)
    shared = torch.randn(2, 3)
    gen["tied_a"], gen["tied_b"] = shared, shared  # one storage, two names
    kp = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1)).state_dict()
    kp["flag"] = torch.tensor([True, False])
    return gen, kp


def _full_checkpoint(gen: dict, kp: dict) -> dict:
    """A checkpoint shaped like FOMM's: models, optimizers with state, epoch."""
    disc = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(disc.parameters())
    disc(torch.ones(1, 2)).sum().backward()
    opt.step()
    return {
        "generator": gen,
        "discriminator": disc.state_dict(),
        "kp_detector": kp,
        "optimizer_generator": opt.state_dict(),
        "optimizer_discriminator": opt.state_dict(),
        "optimizer_kp_detector": opt.state_dict(),
        "epoch": 12,
    }


def _save(obj: object, path: Path, zipped: bool) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=zipped)
    return path


def _expected(t: "torch.Tensor") -> np.ndarray:
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def _assert_same(got: dict[str, np.ndarray], want: dict) -> None:
    assert list(got) == list(want)
    for key, tensor in want.items():
        ref = _expected(tensor)
        arr = got[key]
        assert isinstance(arr, np.ndarray), key
        assert arr.dtype == ref.dtype and arr.shape == ref.shape, key
        assert arr.flags.c_contiguous, key
        np.testing.assert_array_equal(arr, ref, err_msg=key)


def _refused(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message
    return message


@FORMATS
def test_reads_full_checkpoint(tmp_path: Path, zipped: bool) -> None:
    gen, kp = _state_dicts()
    path = _save(_full_checkpoint(gen, kp), tmp_path / "vox.pth.tar", zipped)
    ckpt = load_checkpoint(str(path))
    assert isinstance(ckpt, Checkpoint)
    _assert_same(ckpt.generator, gen)
    _assert_same(ckpt.kp_detector, kp)
    assert ckpt.generator["1.num_batches_tracked"].dtype == np.int64
    assert ckpt.generator["half"].dtype == np.float16
    assert ckpt.path == path
    assert ckpt.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    ckpt.generator["tied_a"][0, 0] += 1  # tied names must not alias each other
    assert ckpt.generator["tied_b"][0, 0] == gen["tied_b"][0, 0].item()


@FORMATS
def test_reads_stripped_checkpoint(tmp_path: Path, zipped: bool) -> None:
    gen, kp = _state_dicts()
    path = _save({"generator": gen, "kp_detector": kp}, tmp_path / "stripped", zipped)
    ckpt = load_checkpoint(path)
    _assert_same(ckpt.generator, gen)
    _assert_same(ckpt.kp_detector, kp)


@FORMATS
def test_parameters_and_plain_dicts(tmp_path: Path, zipped: bool) -> None:
    """Parameters (``_rebuild_parameter``) and plain dicts instead of OrderedDicts load too."""
    weight = torch.nn.Parameter(torch.randn(3, 2))
    path = _save({"generator": {"w": weight}, "kp_detector": {}}, tmp_path / "p.pth", zipped)
    ckpt = load_checkpoint(path)
    np.testing.assert_array_equal(ckpt.generator["w"], weight.detach().numpy())
    assert ckpt.kp_detector == {}


# --- hand-written legacy files, for layouts current torch no longer writes ----


class _Storage:
    def __init__(self, key: str, data: np.ndarray, view: tuple | None = None) -> None:
        self.key, self.data, self.view = key, data, view


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


def _write_legacy(path: Path, obj: object, roots: list[_Storage], numel: dict[str, int]) -> Path:
    """Write the legacy stream by hand: header pickles, object, key list, raw data."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _Storage):
                return ("storage", torch.FloatStorage, o.key, "cpu", numel[o.key], o.view)
            return None

    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    Pickler(buf, protocol=2).dump(obj)
    pickle.dump([s.key for s in roots], buf, protocol=2)
    for s in roots:
        buf.write(numel[s.key].to_bytes(8, "little") + s.data.astype("<f4").tobytes())
    path.write_bytes(buf.getvalue())
    return path


def test_legacy_storage_views(tmp_path: Path) -> None:
    """Old files could name a slice of a storage (view metadata in the persistent id)."""
    data = np.arange(10, dtype=np.float32)
    root = _Storage("root", data)
    view = _Storage("root", data, ("v1", 2, 6))  # elements 2..7 of root
    obj = {
        "generator": {"a": _Tensor(view, 1, (2, 2), (1, 2))},
        "kp_detector": {"b": _Tensor(root, 0, (10,), (1,))},
    }
    ckpt = load_checkpoint(_write_legacy(tmp_path / "old.pth", obj, [root], {"root": 10}))
    np.testing.assert_array_equal(ckpt.generator["a"], data[3:7].reshape(2, 2).T)
    np.testing.assert_array_equal(ckpt.kp_detector["b"], data)


@pytest.mark.parametrize(
    "offset,size,stride",
    [(0, (11,), (1,)), (8, (2, 2), (2, 1)), (0, (3, 4), (4, 0)), (-1, (2,), (1,)), (0, (2,), (-1,))],
)
def test_tensor_outside_its_storage_is_refused(tmp_path: Path, offset, size, stride) -> None:
    """A forged size or stride must not make numpy read past the buffer."""
    root = _Storage("root", np.zeros(10, np.float32))
    obj = {"generator": {"a": _Tensor(root, offset, size, stride)}, "kp_detector": {}}
    path = _write_legacy(tmp_path / "forged.pth", obj, [root], {"root": 10})
    if size == (3, 4):  # a zero stride is legal (expand); 3x4 with stride (4, 0) fits
        assert load_checkpoint(path).generator["a"].shape == (3, 4)
    else:
        assert "is corrupt" in _refused(path)


def test_forged_storage_size_is_refused_before_allocating(tmp_path: Path) -> None:
    root = _Storage("root", np.zeros(10, np.float32))
    obj = {"generator": {"a": _Tensor(root, 0, (10,), (1,))}, "kp_detector": {}}
    path = _write_legacy(tmp_path / "huge.pth", obj, [root], {"root": 10**15})
    assert "truncated" in _refused(path)


# --- unsafe pickles -------------------------------------------------------------


class _Evil:
    def __init__(self, func, args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _attacks(marker: Path) -> list[tuple[object, tuple]]:
    return [
        (os.system, (f"touch {marker}",)),
        (eval, (f"open({str(marker)!r}, 'w')",)),
        (subprocess.Popen, (["touch", str(marker)],)),
    ]


@FORMATS
@pytest.mark.parametrize("attack", [0, 1, 2], ids=["os.system", "eval", "Popen"])
def test_code_in_pickle_is_refused(tmp_path: Path, zipped: bool, attack: int) -> None:
    marker = tmp_path / "MARKER"
    func, args = _attacks(marker)[attack]
    gen, kp = _state_dicts()
    obj = {"generator": gen, "kp_detector": kp, "optimizer_generator": _Evil(func, args)}
    path = _save(obj, tmp_path / "evil.pth.tar", zipped)
    message = _refused(path)
    assert f"'{func.__module__}.{func.__qualname__}'" in message
    assert "malicious" in message
    assert not marker.exists()


def test_protocol4_stack_global_is_refused(tmp_path: Path) -> None:
    """STACK_GLOBAL (protocol >= 4) goes through the same allow-list."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil4.pth"
    with zipfile.ZipFile(path, "w") as zf:
        evil = {"generator": _Evil(os.system, (f"touch {marker}",))}
        zf.writestr("evil4/data.pkl", pickle.dumps(evil, protocol=4))
    assert "system" in _refused(path)
    assert not marker.exists()


def test_plain_pickle_is_not_even_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(_Evil(os.system, (f"touch {marker}",))))
    assert "not a PyTorch checkpoint" in _refused(path)
    assert not marker.exists()


def test_whole_model_pickle_is_refused(tmp_path: Path) -> None:
    path = _save({"generator": torch.nn.Linear(2, 2), "kp_detector": {}}, tmp_path / "model.pth", True)
    assert "'torch.nn.modules.linear.Linear'" in _refused(path)


# --- damaged and foreign files ----------------------------------------------------


def _pickle_ends(data: bytes, count: int) -> list[int]:
    """Offsets just past each of the first ``count`` pickles, found without unpickling."""
    stream, ends = io.BytesIO(data), []
    for _ in range(count):
        for _op in pickletools.genops(stream):
            pass
        ends.append(stream.tell())
    return ends


@FORMATS
def test_truncated_files_are_refused(tmp_path: Path, zipped: bool) -> None:
    gen, kp = _state_dicts()
    gen["big"] = torch.randn(1000)
    full = _save(_full_checkpoint(gen, kp), tmp_path / "full.pth", zipped).read_bytes()
    if zipped:
        cuts = [3, 40, len(full) // 3, len(full) // 2, len(full) - 30, len(full) - 1]
    else:
        header, obj, keys = _pickle_ends(full, 5)[2:5]
        in_header = [5, 20, header + 1]
        in_pickle = [(header + obj) // 2, obj, obj + 4]
        in_data = [keys + 3, keys + 8 + 100, len(full) - 1]
        cuts = in_header + in_pickle + in_data
    for cut in cuts:
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(full[:cut])
        message = _refused(path)
        assert "truncated" in message and "download it again" in message, (cut, message)


def test_truncation_inside_a_skipped_storage_is_refused(tmp_path: Path) -> None:
    """Storages of ignored entries are skipped with seek, yet a short file is still noticed."""
    used, skipped = _Storage("a", np.ones(4, np.float32)), _Storage("b", np.ones(50, np.float32))
    obj = {
        "generator": {"w": _Tensor(used, 0, (4,), (1,))},
        "kp_detector": {},
        "optimizer_generator": {"m": _Tensor(skipped, 0, (50,), (1,))},
    }
    path = _write_legacy(tmp_path / "full.pth", obj, [used, skipped], {"a": 4, "b": 50})
    np.testing.assert_array_equal(load_checkpoint(path).generator["w"], np.ones(4))
    path.write_bytes(path.read_bytes()[:-1])
    assert "ends inside storage b" in _refused(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth.tar")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"", "empty"),
        (bytes(range(256)) * 4, "not a PyTorch checkpoint"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "image"),
        (b"<!DOCTYPE html><html>Not Found</html>", "web page"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "git lfs"),
        (b"model_params:\n  common_params: {}\n", "text file"),
        (b"PK\x03\x04" + bytes(60), "truncated or corrupt"),
    ],
    ids=["empty", "garbage", "png", "html", "lfs", "text", "broken-zip"],
)
def test_foreign_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "thing.pth.tar"
    path.write_bytes(content)
    assert expected in _refused(path)


@FORMATS
def test_missing_entries_are_named(tmp_path: Path, zipped: bool) -> None:
    gen, _ = _state_dicts()
    path = _save({"generator": gen, "epoch": 3}, tmp_path / "half.pth", zipped)
    message = _refused(path)
    assert "'kp_detector'" in message and "'generator', 'epoch'" in message


@FORMATS
@pytest.mark.parametrize(
    "obj,expected",
    [
        ([1, 2], "holds a list, not a dict"),
        ({"generator": {"a": 3}, "kp_detector": {}}, "not a tensor"),
        ({"generator": [1], "kp_detector": {}}, "not a state dict"),
    ],
)
def test_wrong_structure(tmp_path: Path, zipped: bool, obj: object, expected: str) -> None:
    assert expected in _refused(_save(obj, tmp_path / "odd.pth", zipped))


def test_loading_never_imports_torch(tmp_path: Path) -> None:
    gen, kp = _state_dicts()
    paths = [_save(_full_checkpoint(gen, kp), tmp_path / f"{z}.pth", z) for z in (False, True)]
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from livepuppet.fomm.checkpoint import load_checkpoint\n"
        "for p in sys.argv[1:]:\n"
        "    c = load_checkpoint(p)\n"
        "    assert c.generator['transposed'].shape == (5, 3)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_corrupt_zip_member_is_refused(tmp_path: Path) -> None:
    """A flipped byte inside a storage fails the zip CRC instead of loading silently."""
    gen, kp = _state_dicts()
    gen["big"] = torch.randn(1000)
    path = _save({"generator": gen, "kp_detector": kp}, tmp_path / "ok.pth", True)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)  # local header
    data[info.header_offset + 30 + name_len + extra_len + 100] ^= 0xFF
    path = tmp_path / "flipped.pth"
    path.write_bytes(bytes(data))
    assert "CRC" in _refused(path)
