"""Reads PyTorch state dicts (`torch.save(model.state_dict(), ...)`) as numpy arrays, no torch.

Both of torch's file formats are read:

- the zip format (torch >= 1.6's default): a zip holding `<archive>/data.pkl`, whose
  persistent ids are `('storage', storage_type, key, location, numel)`, and each storage's raw
  little-endian bytes in `<archive>/data/<key>`;
- the legacy format (`_use_new_zipfile_serialization=False`, and every file written by torch
  < 1.6): pickle(magic number), pickle(protocol version), pickle(sys info), the main pickle
  (persistent ids `('storage', storage_type, key, location, numel, view_metadata)`), pickle(the
  list of storage keys), then per key in that order an int64 element count and the raw bytes.

A `.pth` file is a pickle, and unpickling runs whatever callables it names. This reader never
imports anything the file names: `find_class` maps the few globals a state dict needs (the
`OrderedDict` container, `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter`, and the
typed storage classes) to functions defined here that build numpy arrays, and refuses every
other global before anything is called. Tensors are rebuilt from their storage with their own
offset and strides (torch saves many tensors non-contiguous, e.g. a transposed view), checked
to lie inside the storage, and copied out.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from sdl_tf import errors

# pickle(magic) that opens a legacy-format file, and the protocol version that follows it.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class StateDictError(errors.SDLError, ValueError):
    """The file is not a readable PyTorch state dict (or holds more than tensors and containers)."""


class _StorageType:
    """Stands for one of torch's typed storage classes (`torch.FloatStorage`, ...)."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str):
        self.name = name
        self.dtype = dtype  # numpy dtype string; "bfloat16" is widened to float32 on read

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


_STORAGES = {
    f"{name}Storage": _StorageType(f"torch.{name}Storage", dtype)
    for name, dtype in (
        ("Float", "<f4"), ("Double", "<f8"), ("Half", "<f2"), ("BFloat16", "bfloat16"),
        ("Long", "<i8"), ("Int", "<i4"), ("Short", "<i2"), ("Char", "i1"), ("Byte", "u1"),
        ("Bool", "?"),
    )
}


class _Storage:
    """One storage: its element type, element count and (once read) its flat numpy data."""

    __slots__ = ("type", "numel", "data")

    def __init__(self, storage_type: _StorageType, numel: int):
        self.type = storage_type
        self.numel = numel
        self.data: np.ndarray | None = None


class _Tensor:
    """A tensor still to be materialised (legacy files hold the storage bytes after the pickle)."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Stands for `torch._utils._rebuild_tensor_v2`: records where the tensor's elements are."""
    del requires_grad, backward_hooks, metadata  # autograd state: meaningless for numpy
    if not isinstance(storage, _Storage):
        raise StateDictError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
    return _Tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """Stands for `torch._utils._rebuild_parameter`: an `nn.Parameter` is just its tensor."""
    del requires_grad, backward_hooks
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): storage_type for name, storage_type in _STORAGES.items()},
}


class _Unpickler(pickle.Unpickler):
    """An unpickler that knows only the globals of a state dict (see the module docstring)."""

    def __init__(self, file, path: str, storages: dict | None = None, legacy: bool = True):
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._legacy = legacy
        self.storages = {} if storages is None else storages  # key -> _Storage

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise StateDictError(
                f"refusing to load {module}.{name} from {self._path}: only tensors and plain "
                "containers are allowed (re-save just the state dict: "
                "torch.save(model.state_dict(), path))"
            ) from None

    def persistent_load(self, pid):
        expected = 6 if self._legacy else 5
        if (not isinstance(pid, tuple) or len(pid) != expected or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[4], int)
                or pid[4] < 0):
            raise StateDictError(f"{self._path}: unsupported persistent id {pid!r:.200}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(storage_type, numel)
        elif storage.type is not storage_type or storage.numel != numel:
            raise StateDictError(f"{self._path}: storage {key} is declared twice differently")
        if self._legacy and pid[5] is not None:
            # A view of a bigger storage (only torch < 0.4 wrote these): (view key, offset, size).
            view_key, offset, view_size = pid[5]
            return _View(storage, offset, view_size, view_key)
        return storage


class _View(_Storage):
    """A legacy storage view: `size` elements of a root storage from `offset` on."""

    __slots__ = ("root", "offset", "key")

    def __init__(self, root: _Storage, offset: int, size: int, key):
        super().__init__(root.type, size)
        self.root, self.offset, self.key = root, offset, key


def _unpickle(data: bytes | io.BufferedIOBase, path: str, **kwargs):
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    unpickler = _Unpickler(stream, path, **kwargs)
    try:
        return unpickler.load(), unpickler
    except StateDictError:
        raise
    except Exception as e:  # EOFError, UnpicklingError, TypeError from a malformed REDUCE ...
        raise StateDictError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {e})"
                             ) from None


def _decode(raw: bytes | bytearray | memoryview, storage_type: _StorageType) -> np.ndarray:
    if storage_type.dtype == "bfloat16":
        # bfloat16 = the high half of a float32: widen without rounding (numpy has no bfloat16).
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, storage_type.dtype)


def _storage_data(storage: _Storage) -> np.ndarray:
    if isinstance(storage, _View):
        root = _storage_data(storage.root)
        if storage.offset < 0 or storage.offset + storage.numel > root.size:
            raise StateDictError(f"storage view {storage.key} lies outside its storage")
        return root[storage.offset:storage.offset + storage.numel]
    if storage.data is None:
        raise StateDictError("a tensor's storage has no data in the file")
    return storage.data


def _materialise(t: _Tensor, path: str) -> np.ndarray:
    data = _storage_data(t.storage)
    size, stride, offset = t.size, t.stride, t.offset
    if (len(size) != len(stride) or not all(isinstance(v, int) for v in (offset, *size, *stride))
            or offset < 0 or min(size, default=1) < 0 or min(stride, default=0) < 0):
        raise StateDictError(f"{path}: bad tensor layout size={size} stride={stride} "
                             f"offset={offset}")
    if 0 in size:
        return np.zeros(size, data.dtype)
    # as_strided reads raw memory: the last element must lie inside the storage.
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= data.size:
        raise StateDictError(f"{path}: a tensor (size {size}, stride {stride}, offset {offset}) "
                             f"reaches past its storage of {data.size} elements")
    view = np.lib.stride_tricks.as_strided(
        data[offset:], shape=size, strides=[s * data.itemsize for s in stride], writeable=False
    )
    return np.array(view, order="C")  # a C-contiguous, writeable copy, off the storage bytes


def _resolve(obj, path: str):
    """Replaces every `_Tensor` in nested dicts/lists/tuples by its numpy array."""
    if isinstance(obj, _Tensor):
        return _materialise(obj, path)
    if isinstance(obj, dict):
        return {k: _resolve(v, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, path) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, path) for v in obj)
    if isinstance(obj, _Storage):
        raise StateDictError(f"{path}: holds a bare storage, not a tensor")
    return obj


def _read_exact(f, n: int, path: str, what: str) -> bytes:
    # A corrupt size could ask for terabytes: compare with what is left before reading.
    left = os.fstat(f.fileno()).st_size - f.tell()
    data = f.read(n) if n <= left else f.read(left)
    if len(data) != n:
        raise StateDictError(f"{path}: truncated file: {what} needs {n} bytes, {len(data)} left")
    return data


def _load_legacy(f, path: str):
    magic, _ = _unpickle(f, path)
    if magic != LEGACY_MAGIC:
        raise StateDictError(f"{path}: not a PyTorch file (no zip archive, no legacy magic number)")
    protocol, _ = _unpickle(f, path)
    if protocol != LEGACY_PROTOCOL:
        raise StateDictError(f"{path}: unsupported legacy protocol version {protocol!r}")
    sys_info, _ = _unpickle(f, path)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise StateDictError(f"{path}: written on a big-endian machine: not supported")
    obj, unpickler = _unpickle(f, path, legacy=True)
    keys, _ = _unpickle(f, path)
    if not isinstance(keys, list):
        raise StateDictError(f"{path}: storage key list is a {type(keys).__name__}")
    storages = unpickler.storages
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise StateDictError(f"{path}: data for storage {key} that no tensor uses")
        (numel,) = struct.unpack("<q", _read_exact(f, 8, path, f"storage {key}'s size"))
        if numel != storage.numel:
            raise StateDictError(f"{path}: storage {key} holds {numel} elements, "
                                 f"{storage.numel} declared")
        raw = _read_exact(f, numel * storage.type.itemsize, path, f"storage {key}")
        storage.data = _decode(raw, storage.type)
    missing = sorted(k for k, s in storages.items() if s.data is None)
    if missing:
        raise StateDictError(f"{path}: no data for storages {missing[:8]}")
    return obj


def _load_zip(path: str):
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise StateDictError(f"{path}: damaged zip archive ({e})") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise StateDictError(f"{path}: a zip, but not a PyTorch file (no <archive>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = prefix + "byteorder"
        if byteorder in names and archive.read(byteorder).strip() != b"little":
            raise StateDictError(f"{path}: written on a big-endian machine: not supported")
        try:
            obj, unpickler = _unpickle(archive.read(pickles[0]), path, legacy=False)
            for key, storage in unpickler.storages.items():
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise StateDictError(f"{path}: truncated: no {member} in the archive")
                raw = archive.read(member)
                size = storage.numel * storage.type.itemsize
                if len(raw) < size:
                    raise StateDictError(f"{path}: truncated: {member} has {len(raw)} bytes, "
                                         f"{size} needed")
                storage.data = _decode(raw[:size], storage.type)
        except (zipfile.BadZipFile, EOFError, OSError) as e:  # CRC errors, cut-off members
            raise StateDictError(f"{path}: damaged zip archive ({e})") from None
    return obj


def read_torch_file(path: str):
    """Loads a PyTorch file that holds only tensors and plain containers.

    Args:
        path: a file written by `torch.save` (zip or legacy format).

    Returns:
        The saved object with each tensor as a numpy array (float32/float64/float16 as saved,
        bfloat16 widened to float32, integer and bool types as saved); OrderedDicts become dicts.

    Raises:
        StateDictError: missing, truncated or damaged file, not a PyTorch file, or one that
            names a global other than a state dict's (nothing it names is ever called).
    """
    if not os.path.isfile(path):
        raise StateDictError(f"PyTorch file not found: {path}")
    if zipfile.is_zipfile(path):
        obj = _load_zip(path)
    else:
        with open(path, "rb") as f:
            if not f.read(1):
                raise StateDictError(f"{path}: empty file")
            f.seek(0)
            obj = _load_legacy(f, path)
    return _resolve(obj, path)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict as {name: numpy array}, without torch.

    A state dict wrapped as `{"state_dict": ...}` or `{"model": ...}` (training checkpoints) is
    unwrapped.

    Args:
        path: `.pth`/`.pt`/`.bin` written by `torch.save` (zip or legacy format).

    Returns:
        {tensor name: array} in the file's order (see `read_torch_file` for the dtypes).

    Raises:
        StateDictError: as `read_torch_file`, or the object is not a {name: tensor} mapping.
    """
    obj = read_torch_file(path)
    while isinstance(obj, dict):
        inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)),
                     None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise StateDictError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(v, np.ndarray))
    if bad:
        raise StateDictError(f"{path}: entries that are not tensors: {', '.join(bad[:8])}")
    return {str(k): v for k, v in obj.items()}
