"""Writes PyTorch state-dict files (legacy and zip format) without torch, for the tests.

The pickles hold the same globals torch writes (`collections.OrderedDict`,
`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`, ...) and the same persistent ids, so
`sdl_tf.utils.torch_state_dict` reads them exactly as it reads `torch.save` output. A tensor can
be stored non-contiguous (its axes permuted in the storage, as torch saves a transposed view)
and at an offset into its storage.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage", np.dtype("int16"): "ShortStorage",
    np.dtype("int8"): "CharStorage", np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}


@dataclasses.dataclass(frozen=True)
class Global:
    """A global the pickle names (module, name) without importing it."""

    module: str
    name: str

    def __call__(self, *args):  # pickle's save_reduce wants a callable; never called here
        raise NotImplementedError(f"{self.module}.{self.name} is only a name in a pickle")


REBUILD_TENSOR = Global("torch._utils", "_rebuild_tensor_v2")


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A tensor as torch stores it: values laid out in the storage in `perm` axis order.

    Attributes:
        value: the logical array.
        perm: axes from slowest to fastest in the storage (None: C order, contiguous). E.g.
            (1, 0) for a 2-D array stores its transpose, as torch does for `w.t()`.
        offset: elements of padding before the tensor in its storage.
    """

    value: np.ndarray
    perm: tuple[int, ...] | None = None
    offset: int = 0

    def layout(self):
        """(storage elements (flat), size, stride) of this tensor."""
        a = np.asarray(self.value)
        perm = self.perm or tuple(range(a.ndim))
        flat = np.ascontiguousarray(a.transpose(perm)).ravel()
        stride = [0] * a.ndim
        step = 1
        for axis in reversed(perm):
            stride[axis] = step
            step *= a.shape[axis]
        storage = np.concatenate([np.zeros(self.offset, a.dtype), flat])
        return storage, tuple(a.shape), tuple(stride)


class _Storage:
    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, data


class _TensorRef:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class Reduce:
    """Pickles as `callable(*args)`: a REDUCE of any `Global` (the malicious-file tests)."""

    def __init__(self, fn: Global, args: tuple):
        self.fn, self.args = fn, args


class _Pickler(pickle._Pickler):  # the Python pickler: its dispatch table can be extended
    def __init__(self, file, legacy: bool):
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.storages: list[_Storage] = []

    def persistent_id(self, obj):
        if not isinstance(obj, _Storage):
            return None
        if all(s is not obj for s in self.storages):
            self.storages.append(obj)
        dtype_name = _STORAGE_NAMES[obj.data.dtype]
        pid = ("storage", Global("torch", dtype_name), obj.key, "cpu", int(obj.data.size))
        return pid + (None,) if self.legacy else pid

    def save_global_marker(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    def save_tensor(self, obj):
        self.save_reduce(REBUILD_TENSOR, (obj.storage, obj.offset, obj.size, obj.stride, False,
                                          collections.OrderedDict()), obj=obj)

    def save_reduce_marker(self, obj):
        self.save_reduce(obj.fn, obj.args, obj=obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[Global] = save_global_marker
    dispatch[_TensorRef] = save_tensor
    dispatch[Reduce] = save_reduce_marker


def _to_refs(state: dict) -> collections.OrderedDict:
    out = collections.OrderedDict()
    for i, (name, value) in enumerate(state.items()):
        if isinstance(value, (np.ndarray, Tensor)):
            t = value if isinstance(value, Tensor) else Tensor(np.asarray(value))
            storage, size, stride = t.layout()
            out[name] = _TensorRef(_Storage(str(i), storage), t.offset, size, stride)
        else:
            out[name] = value  # anything else is pickled as is (e.g. a `Reduce`)
    # torch's state_dict() carries the modules' versions in this attribute (a BUILD opcode).
    out._metadata = collections.OrderedDict({"": {"version": 1}})
    return out


def _dumps(obj, legacy: bool) -> tuple[bytes, list[_Storage]]:
    buf = io.BytesIO()
    pickler = _Pickler(buf, legacy)
    pickler.dump(obj)
    return buf.getvalue(), pickler.storages


def write_legacy(path: str, state: dict) -> None:
    """Writes `state` ({name: array | Tensor | Reduce}) as torch's legacy (pre-zip) format."""
    main, storages = _dumps(_to_refs(state), legacy=True)
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, 1001,
                       {"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            f.write(pickle.dumps(header, protocol=2))
        f.write(main)
        keys = [s.key for s in storages]
        f.write(pickle.dumps(keys, protocol=2))
        for s in storages:
            f.write(struct.pack("<q", s.data.size))
            f.write(s.data.astype(s.data.dtype.newbyteorder("<"), copy=False).tobytes())


def write_zip(path: str, state: dict, archive: str = "archive") -> None:
    """Writes `state` as torch's zip format (`torch.save`'s default since torch 1.6)."""
    main, storages = _dumps(_to_refs(state), legacy=False)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", main)
        z.writestr(f"{archive}/byteorder", "little")
        for s in storages:
            z.writestr(f"{archive}/data/{s.key}", s.data.tobytes())
        z.writestr(f"{archive}/version", "3\n")
