"""Safe reader of PyTorch ``.pth.tar`` checkpoints, without torch.

A checkpoint is a pickle, and an ordinary unpickler runs whatever function the
file names. This reader only lets the pickle build dicts, lists, numbers and
tensors: every global it asks for goes through an allow-list that hands back
inert stand-ins, so nothing named in the file is ever called. Tensor data is
read straight from the file into numpy buffers, and only for the two entries
livepuppet needs (``generator`` and ``kp_detector``).

Both serialisations of ``torch.save`` are read: the legacy stream (PyTorch <
1.6, every published FOMM checkpoint) and the zip archive (PyTorch >= 1.6).
"""

from __future__ import annotations

import _compat_pickle
import collections
import functools
import hashlib
import io
import os
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np

from livepuppet.errors import CheckpointError

__all__ = ["Checkpoint", "load_checkpoint", "file_sha256"]

NEEDED = ("generator", "kp_detector")
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + _LEGACY_MAGIC.to_bytes(10, "little")
_ZIP_PREFIXES = (b"PK\x03\x04", b"PK\x05\x06")
_REDOWNLOAD = "download it again"


@dataclass(frozen=True)
class Checkpoint:
    """The two state dicts of a FOMM checkpoint, plus where they came from."""

    generator: dict[str, np.ndarray]
    kp_detector: dict[str, np.ndarray]
    path: Path
    sha256: str


# --- inert stand-ins for the globals a state dict pickle names ---------------


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: only a dtype."""

    name: str
    dtype: np.dtype  # native-order dtype of the raw bytes on disk
    bfloat16: bool = False


@dataclass(frozen=True, slots=True)
class _DType:
    """Stands in for ``torch.float32`` and friends when they appear as values."""

    name: str


@dataclass(frozen=True, slots=True)
class _Storage:
    """A storage named by a persistent id; its bytes are read later."""

    type: _StorageType
    key: str  # key of the root storage in the file
    start: int  # first element inside the root storage (legacy views)
    numel: int


@dataclass(frozen=True, slots=True)
class _Tensor:
    """A tensor as the pickle describes it: a strided window on a storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _storage_types() -> dict[str, _StorageType]:
    table = {
        "DoubleStorage": np.float64, "FloatStorage": np.float32,
        "HalfStorage": np.float16, "LongStorage": np.int64,
        "IntStorage": np.int32, "ShortStorage": np.int16,
        "CharStorage": np.int8, "ByteStorage": np.uint8,
        "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
        "ComplexDoubleStorage": np.complex128, "UntypedStorage": np.uint8,
    }
    types = {name: _StorageType(name, np.dtype(dt)) for name, dt in table.items()}
    types["BFloat16Storage"] = _StorageType("BFloat16Storage", np.dtype(np.uint16), True)
    return types


_STORAGE_TYPES = _storage_types()
_DTYPE_NAMES = (
    "float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 bool "
    "complex64 complex128 double float half long int short cfloat cdouble"
).split()


def _int(value: Any) -> int:
    if type(value) is not int:
        raise CheckpointError(f"a tensor header holds {type(value).__name__} where an integer belongs")
    return value


def _ints(values: Any) -> tuple[int, ...]:
    if not isinstance(values, tuple):
        raise CheckpointError(f"a tensor header holds {type(values).__name__} where sizes belong")
    return tuple(_int(v) for v in values)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _Tensor:
    """Replaces ``torch._utils._rebuild_tensor_v2``; checks the window fits the storage."""
    if not isinstance(storage, _Storage):
        raise CheckpointError("a tensor is built on something that is not a storage")
    offset, shape, strides = _int(offset), _ints(size), _ints(stride)
    if len(shape) > _MAX_NDIM or len(shape) != len(strides) or offset < 0 or min(shape + strides, default=0) < 0:
        raise CheckpointError(f"a tensor has an impossible layout (size {shape}, stride {strides})")
    if 0 in shape and offset > storage.numel:
        raise CheckpointError(f"an empty tensor starts at element {offset} of a storage of {storage.numel}")
    if 0 not in shape:
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
        if last >= storage.numel:
            raise CheckpointError(
                f"a tensor of size {shape} reaches element {last} of a storage of {storage.numel}"
            )
    return _Tensor(storage, offset, shape, strides)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """Replaces ``torch._utils._rebuild_parameter``: a parameter is just its tensor here."""
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    **{("torch", name): st for name, st in _STORAGE_TYPES.items()},
    **{("torch.cuda", name): st for name, st in _STORAGE_TYPES.items()},
    ("torch.storage", "UntypedStorage"): _STORAGE_TYPES["UntypedStorage"],
    **{("torch", name): _DType(name) for name in _DTYPE_NAMES},
}


_ATOMIC = (str, int, float, bool, bytes, type(None))
_MAX_MARK_DEPTH = 100  # a FOMM checkpoint nests about 8 deep
_MAX_NDIM = 64  # torch's own limit on tensor dimensions


def _short(value: Any) -> str:
    """A repr that stays short and cheap whatever the file put there (no repr of nested containers)."""
    if isinstance(value, (str, bytes)):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if type(value) in (int, float, bool) or value is None:
        return repr(value) if not isinstance(value, int) or abs(value) < 10**18 else "a huge integer"
    return f"a {type(value).__name__}"


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Bounded:
    """The file as the unpickler sees it: a read longer than the bytes left is refused before it allocates."""

    def __init__(self, f: IO[bytes], left: int, name: str) -> None:
        self.f, self.left, self.name = f, left, name

    def read(self, n: int) -> bytes:
        if n > self.left:
            raise _truncated(self.name, f"a pickle field declares {n} bytes where {self.left} are left")
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def readline(self) -> bytes:
        data = self.f.readline(self.left)
        self.left -= len(data)
        return data


def _refuse_opcode(self: "_SafeUnpickler") -> None:
    raise CheckpointError(f"{self.filename} uses out-of-band pickle buffers, which torch.save never writes")


class _SafeUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Pure-Python unpickler whose globals come only from ``_ALLOWED``; storages become ``_Storage``.

    The Python implementation is used so each opcode can be checked before it acts: dict keys and set
    members must be plain values (a nested tuple key can take hours to hash), memo indices and copies are
    bounded by the bytes in the file, BUILD touches only OrderedDicts, and Ctrl-C works between opcodes.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: IO[bytes], filename: str, left: int) -> None:
        super().__init__(_Bounded(file, left, filename), encoding="utf-8")
        self.filename = filename
        self.budget = self.memo_limit = left  # elements set/tuple calls may copy; largest memo index
        self.roots: dict[str, tuple[_StorageType, int]] = {}  # key -> (type, numel)

    def _fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.filename} is corrupt ({what}); {_REDOWNLOAD}")

    def _keys(self, keys: Any) -> None:
        for key in keys:
            if type(key) not in _ATOMIC:
                raise self._fail(f"a dict key or set member is {_short(key)}, which a state dict never holds")

    def _copy(self, kind: type, items: Any = (), *extra: Any) -> Any:
        items = list(items) if isinstance(items, (list, tuple, set, frozenset)) and not extra else None
        if items is None:
            raise self._fail(f"{kind.__name__}() is called on something that is not a container")
        self.budget -= len(items)
        if self.budget < 0:
            raise self._fail("it copies more elements than the file holds")
        self._keys(items)
        return kind(items)

    def _load_mark(self) -> None:
        if len(self.metastack) >= _MAX_MARK_DEPTH:
            raise self._fail(f"the pickle nests deeper than {_MAX_MARK_DEPTH} levels")
        pickle._Unpickler.load_mark(self)  # type: ignore[attr-defined]

    def _load_setitem(self) -> None:
        self._keys(self.stack[-2:-1])
        pickle._Unpickler.load_setitem(self)  # type: ignore[attr-defined]

    def _load_put(self) -> None:
        self._memo_put(int(self.readline()[:-1]))

    def _load_long_binput(self) -> None:
        self._memo_put(int.from_bytes(self.read(4), "little"))

    def _memo_put(self, index: int) -> None:
        if not 0 <= index <= self.memo_limit:  # pickle numbers its memo 0, 1, 2...: never past the file's size
            raise self._fail(f"a pickle memo index of {_short(index)} in a file of {self.memo_limit} bytes")
        self.memo[index] = self.stack[-1]

    def _load_build(self) -> None:
        state = self.stack.pop()
        if type(self.stack[-1]) is not collections.OrderedDict:
            raise self._fail(f"it sets attributes on {_short(self.stack[-1])}, which torch.save never does")
        del state  # an OrderedDict's state is torch's _metadata, which livepuppet does not need

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles spell some globals the Python 2 way ('__builtin__.eval').
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            found = _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            found = None
        if found in (set, frozenset, tuple):
            return functools.partial(self._copy, found)
        if found is not None:
            return found
        what = _clip(f"{module}.{name}", 80)
        if module == "torch" or module.startswith("torch."):
            raise CheckpointError(
                f"{self.filename} asks for '{what}', which is not part of a plain state-dict "
                "checkpoint; refusing to load it (livepuppet reads state dicts only and never "
                "runs code from a checkpoint). Use the published .pth.tar file"
            )
        raise CheckpointError(
            f"{self.filename} asks to run '{what}', which a model checkpoint never needs; "
            "refusing to load it (it may be malicious). Delete it and use the published .pth.tar file"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            kind = _short(pid[0]) if isinstance(pid, tuple) and pid else _short(pid)
            raise CheckpointError(
                f"{self.filename} holds a pickled {kind} object, not a state dict; "
                "livepuppet only reads checkpoints of state dicts"
            )
        st_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(st_type, _StorageType) or type(key) is not str:
            raise CheckpointError(f"{self.filename} names a storage in a way PyTorch never writes")
        numel = _int(numel)
        known = self.roots.setdefault(key, (st_type, numel))
        if known != (st_type, numel) or numel < 0:
            raise CheckpointError(f"{self.filename} describes storage {_short(key)} in two different ways")
        if view is None:
            return _Storage(st_type, key, 0, numel)
        # Legacy storage views: (view_key, element offset, element count) inside the root.
        if not (isinstance(view, tuple) and len(view) == 3):
            raise CheckpointError(f"{self.filename} names a storage view in a way PyTorch never writes")
        _view_key, start, count = view
        start, count = _int(start), _int(count)
        if start < 0 or count < 0 or start + count > numel:
            raise CheckpointError(f"{self.filename} has a storage view outside its storage")
        return _Storage(st_type, key, start, count)


def _checking_keys(step: int, base: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap a marked opcode (SETITEMS, DICT, ADDITEMS, FROZENSET) so its keys are checked before hashing."""
    def load(unpickler: _SafeUnpickler) -> None:
        unpickler._keys(unpickler.stack[::step])
        base(unpickler)
    return load


def _patch_dispatch() -> None:
    base, table = pickle._Unpickler, _SafeUnpickler.dispatch  # type: ignore[attr-defined]
    table[pickle.MARK[0]] = _SafeUnpickler._load_mark
    table[pickle.BUILD[0]] = _SafeUnpickler._load_build
    table[pickle.SETITEM[0]] = _SafeUnpickler._load_setitem
    table[pickle.PUT[0]] = _SafeUnpickler._load_put
    table[pickle.LONG_BINPUT[0]] = _SafeUnpickler._load_long_binput
    table[pickle.SETITEMS[0]] = _checking_keys(2, base.load_setitems)
    table[pickle.DICT[0]] = _checking_keys(2, base.load_dict)
    table[pickle.ADDITEMS[0]] = _checking_keys(1, base.load_additems)
    table[pickle.FROZENSET[0]] = _checking_keys(1, base.load_frozenset)
    for op in (pickle.BYTEARRAY8, pickle.NEXT_BUFFER, pickle.READONLY_BUFFER):
        table[op[0]] = _refuse_opcode


_patch_dispatch()


# --- reading -----------------------------------------------------------------


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so memory stays flat."""
    digest = hashlib.sha256()
    block = bytearray(1 << 20)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(block):
            digest.update(view[:n])
    return digest.hexdigest()


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read ``generator`` and ``kp_detector`` of a FOMM checkpoint as numpy arrays.

    Raises :class:`CheckpointError` with a one-line reason for a missing,
    truncated, foreign or unsafe file.
    """
    p = Path(path)
    name = p.name
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} not found; check the path or download the model")
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory; give the path of the .pth.tar file inside it")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(len(_LEGACY_PREFIX))
            f.seek(0)
            if not head:
                raise CheckpointError(f"{name} is empty (0 bytes); {_REDOWNLOAD}")
            if head.startswith(_ZIP_PREFIXES) or (len(head) < 4 and b"PK\x03\x04".startswith(head)):
                entries = _read_zip(f, name, size)
            elif _LEGACY_PREFIX.startswith(head) or head.startswith(_LEGACY_PREFIX):
                entries = _read_legacy(f, name, size)
            else:
                raise CheckpointError(f"{name} is not a PyTorch checkpoint ({_describe(head, p)})")
    except OSError as e:
        raise CheckpointError(f"cannot read {p}: {e.strerror or e}") from e
    return Checkpoint(entries["generator"], entries["kp_detector"], p, file_sha256(p))


def _describe(head: bytes, path: Path) -> str:
    """Guess what a non-checkpoint file is, so the user knows what went wrong."""
    with open(path, "rb") as f:
        start = f.read(512)
    if start.startswith(b"\x89PNG") or start.startswith(b"\xff\xd8\xff"):
        return "it is an image; give the .pth.tar model file"
    if start.lstrip().lower().startswith((b"<!doctype", b"<html", b"<?xml")):
        return f"it is a web page, so the download failed; {_REDOWNLOAD}"
    if start.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file itself; fetch it with `git lfs pull`"
    if start[:5] == b"\x1f\x8b\x08" or b"ustar" in start[257:263]:
        return "it is a gzip or tar archive; old tar-format PyTorch checkpoints are not supported"
    try:
        start.decode("utf-8")
        return f"it is a text file starting {start[:20]!r}; give the .pth.tar model file"
    except UnicodeDecodeError:
        return f"it starts with {head[:8]!r}; give the .pth.tar model file"


def _unpickle(unpickler: _SafeUnpickler, name: str, what: str) -> Any:
    """Run one unpickler, turning every failure into a one-line CheckpointError."""
    try:
        return unpickler.load()
    except CheckpointError as e:  # from a stand-in; those of the unpickler already name the file
        if str(e).startswith(name):
            raise
        raise CheckpointError(f"{name} is corrupt ({e}); {_REDOWNLOAD}") from None
    except MemoryError:
        raise
    except Exception as e:  # hostile or damaged bytes can make the unpickler raise anything
        raise _truncated(name, f"{what} does not decode: {type(e).__name__}") from None


def _pick_entries(obj: Any, name: str) -> dict[str, dict[str, _Tensor]]:
    """Select and check the two state dicts; everything else in the file is ignored."""
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{name} holds a {type(obj).__name__}, not a dict of state dicts; "
            "it is not a First Order Motion Model checkpoint"
        )
    missing = [k for k in NEEDED if k not in obj]
    if missing:
        has = ", ".join(_short(k) for k in list(obj)[:8]) + (", ..." if len(obj) > 8 else "")
        raise CheckpointError(
            f"{name} has no {' or '.join(repr(k) for k in missing)} entry (it has {has or 'nothing'}); "
            "use a First Order Motion Model checkpoint such as vox-adv-cpk.pth.tar"
        )
    picked = {}
    for entry in NEEDED:
        sd = obj[entry]
        if not isinstance(sd, dict):
            kind = type(sd).__name__
            raise CheckpointError(f"{name}: entry {entry!r} is a {kind}, not a state dict")
        for key, value in sd.items():
            if type(key) is not str or not isinstance(value, _Tensor):
                raise CheckpointError(
                    f"{name}: {entry}[{_short(key)}] is a {type(value).__name__}, not a tensor; "
                    "it is not a plain state dict"
                )
        picked[entry] = sd
    return picked


def _read_legacy(f: IO[bytes], name: str, size: int) -> dict[str, dict[str, np.ndarray]]:
    """Legacy stream: header pickles, object pickle, key list, then raw storages in order."""
    header = _SafeUnpickler(f, name, size - f.tell())
    if _unpickle(header, name, "the header") != _LEGACY_MAGIC:
        raise CheckpointError(f"{name} is not a PyTorch checkpoint (wrong magic number)")
    if _unpickle(header, name, "the header") != 1001:
        raise CheckpointError(f"{name} uses an unknown legacy PyTorch format version")
    sys_info = _unpickle(header, name, "the header")
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    unpickler = _SafeUnpickler(f, name, size - f.tell())
    entries = _pick_entries(_unpickle(unpickler, name, "the pickle"), name)
    keys = _unpickle(_SafeUnpickler(f, name, size - f.tell()), name, "the storage list")
    if not isinstance(keys, list) or not all(type(k) is str for k in keys):
        raise _truncated(name, "bad storage list")
    wanted = {t.storage.key for sd in entries.values() for t in sd.values()}
    _check_output_size(entries, name, size)
    arrays: dict[str, np.ndarray] = {}
    pos = f.tell()
    for key in keys:
        if key not in unpickler.roots:
            raise _truncated(name, f"storage {key} is listed but never used")
        st_type, numel = unpickler.roots[key]
        count_bytes = f.read(8)
        if len(count_bytes) < 8:
            raise _truncated(name, f"the file ends in the header of storage {key}")
        count = int.from_bytes(count_bytes, "little" if little else "big")
        if count != numel:
            raise _truncated(name, f"storage {key} has {count} elements, expected {numel}")
        nbytes = numel * st_type.dtype.itemsize
        pos += 8 + nbytes
        if pos > size:  # checked before allocating, so a forged count cannot exhaust memory
            raise _truncated(name, f"the file ends inside storage {key}")
        if key in wanted:
            arr = np.empty(numel, st_type.dtype)
            if f.readinto(arr.view(np.uint8)) != nbytes:
                raise _truncated(name, f"the file ends inside storage {key}")
            arrays[key] = _native(arr, little)
        else:
            f.seek(nbytes, io.SEEK_CUR)
    missing = wanted - arrays.keys()
    if missing:
        raise _truncated(name, f"no data for storage {sorted(missing)[0]}")
    return _materialise(entries, arrays)


_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError)


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, size: int) -> IO[bytes]:
    """Open one member after checking it is what torch.save writes: stored (not compressed), not encrypted,
    and no larger than the file itself, so no member can expand or declare more than exists."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(
            f"{name}: zip member {_short(info.filename)} is compressed (method {info.compress_type}), "
            "which torch.save never does; refusing it. Use the published checkpoint"
        )
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{name}: zip member {_short(info.filename)} is encrypted; use the published checkpoint")
    if info.file_size != info.compress_size or info.header_offset + info.file_size > size:
        raise _truncated(name, f"zip member {_short(info.filename)} declares more bytes than the file holds")
    return archive.open(info)


def _read_zip(f: IO[bytes], name: str, size: int) -> dict[str, dict[str, np.ndarray]]:
    """Zip archive: ``<prefix>/data.pkl`` plus one raw member ``<prefix>/data/<key>`` per storage."""
    try:
        archive = zipfile.ZipFile(f)
        members = {info.filename: info for info in archive.infolist()}
    except _ZIP_ERRORS as e:
        raise _truncated(name, f"its zip directory is unreadable: {_clip(str(e))}") from None
    with archive:
        pickles = [m for m in members if m.endswith("/data.pkl") and m.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(
                f"{name} is a zip archive but not a PyTorch checkpoint (no single data.pkl)"
            )
        prefix = pickles[0][: -len("data.pkl")]
        little = True
        try:
            if f"{prefix}byteorder" in members:
                with _member(archive, members[f"{prefix}byteorder"], name, size) as m:
                    little = m.read(16).strip() != b"big"
            info = members[pickles[0]]
            with _member(archive, info, name, size) as m:
                pkl = m.read(info.file_size)
        except _ZIP_ERRORS as e:
            raise _truncated(name, f"its data.pkl is unreadable: {_clip(str(e))}") from None
        unpickler = _SafeUnpickler(io.BytesIO(pkl), name, len(pkl))
        entries = _pick_entries(_unpickle(unpickler, name, "the pickle"), name)
        _check_output_size(entries, name, size)
        arrays: dict[str, np.ndarray] = {}
        for key in sorted({t.storage.key for sd in entries.values() for t in sd.values()}):
            st_type, numel = unpickler.roots[key]
            info = members.get(f"{prefix}data/{key}")
            nbytes = numel * st_type.dtype.itemsize
            if info is None or info.file_size < nbytes:
                raise _truncated(name, f"storage {_short(key)} is missing or short")
            try:
                with _member(archive, info, name, size) as member:
                    arr = np.empty(numel, st_type.dtype)
                    _read_into(member.read, arr.view(np.uint8), name, key)
            except _ZIP_ERRORS as e:
                raise _truncated(name, f"storage {_short(key)} is unreadable: {_clip(str(e))}") from None
            arrays[key] = _native(arr, little)
    return _materialise(entries, arrays)


def _check_output_size(entries: dict[str, dict[str, _Tensor]], name: str, size: int) -> None:
    """Refuse, before allocating, tensors that would hold more bytes than the file: zero strides or shared
    storages can make a few hundred bytes declare gigabytes. One MiB of slack covers tied weights."""
    total = 0
    for sd in entries.values():
        for t in sd.values():
            total += int(np.prod([max(n, 1) for n in t.shape], dtype=object)) * t.storage.type.dtype.itemsize
    if total > size + (1 << 20):
        raise _truncated(name, f"its tensors declare {total} bytes, more than the {size} bytes of the file")


def _read_into(read: Callable[[int], bytes], out: np.ndarray, name: str, key: str) -> None:
    """Fill ``out`` from a stream in 4 MiB pieces, so no second full-size copy exists."""
    pos, total = 0, out.nbytes
    while pos < total:
        chunk = read(min(1 << 22, total - pos))
        if not chunk:
            raise _truncated(name, f"storage {key} ends early")
        out[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
        pos += len(chunk)


def _truncated(name: str, why: str) -> CheckpointError:
    return CheckpointError(f"{name} is truncated or corrupt ({why}); {_REDOWNLOAD}")


def _native(arr: np.ndarray, little: bool) -> np.ndarray:
    """Swap bytes in place when the file's byte order is not this machine's."""
    if little != (sys.byteorder == "little"):
        arr.byteswap(inplace=True)
    return arr


def _materialise(
    entries: dict[str, dict[str, _Tensor]], arrays: dict[str, np.ndarray]
) -> dict[str, dict[str, np.ndarray]]:
    """Cut each tensor out of its storage; whole-storage tensors reuse the buffer, others copy."""
    used: set[str] = set()
    out: dict[str, dict[str, np.ndarray]] = {}
    for entry, sd in entries.items():
        result = {}
        for key, t in sd.items():
            st = t.storage
            base = arrays[st.key][st.start:st.start + st.numel]
            n = int(np.prod(t.shape, dtype=np.int64))
            if n == 0:
                arr = np.empty(t.shape, base.dtype)
            elif _is_contiguous(t.shape, t.stride):
                arr = base[t.offset:t.offset + n].reshape(t.shape)
                if n != arrays[st.key].size or st.key in used:
                    arr = arr.copy()  # don't pin a larger buffer or alias another tensor
            else:
                itemsize = base.itemsize
                arr = np.lib.stride_tricks.as_strided(
                    base[t.offset:], t.shape, [s * itemsize for s in t.stride], writeable=False
                ).copy()
            used.add(st.key)
            if st.type.bfloat16:  # numpy has no bfloat16: widen exactly to float32
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            result[key] = arr
        out[entry] = result
    return out


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for n, s in zip(reversed(shape), reversed(stride)):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def check_finite(ckpt: Checkpoint) -> None:
    """Refuse weights holding NaN or infinity, naming the first such tensor: converting them would only
    fail later with an unhelpful verification error, or make a model that draws black frames."""
    for entry in NEEDED:
        for key, arr in getattr(ckpt, entry).items():
            if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
                raise CheckpointError(
                    f"{ckpt.path.name}: {entry}[{_short(key)}] holds {bad} NaN or infinite values of {arr.size}; "
                    "the checkpoint is damaged or from a diverged training run: use another one"
                )
