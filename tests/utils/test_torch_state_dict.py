"""Tests for sdl_tf.utils.torch_state_dict: torch's legacy and zip formats read without torch."""

import zipfile

import numpy as np
import pytest

from sdl_tf.utils import torch_state_dict
from sdl_tf.utils.torch_state_dict import StateDictError, read_state_dict, read_torch_file
from tests.helpers import torch_files

WRITERS = {"legacy": torch_files.write_legacy, "zip": torch_files.write_zip}


def _state():
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    fc = rng.normal(size=(5, 6)).astype(np.float32)
    return {
        # As torch saved EfficientNet's stem: size (32, 3, 3, 3), stride (1, 32, 288, 96).
        "conv.weight": torch_files.Tensor(conv, perm=(2, 3, 1, 0)),
        "fc.weight": torch_files.Tensor(fc, perm=(1, 0)),  # a transposed view: stride (1, 5)
        "fc.bias": torch_files.Tensor(np.arange(6, dtype=np.float32), offset=7),
        "bn.running_var": np.linspace(0.5, 2.0, 4).astype(np.float64),
        "bn.num_batches_tracked": np.array(12, np.int64),
        "half": np.array([1.5, -2.0], np.float16),
        "mask": np.array([True, False, True]),
        "int8": np.array([-3, 4], np.int8),
        "empty": np.zeros((0, 3), np.float32),
    }


def _value(v):
    return v.value if isinstance(v, torch_files.Tensor) else v


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_reads_values_dtypes_and_strided_tensors(tmp_path, fmt):
    path = str(tmp_path / f"state_{fmt}.pth")
    state = _state()
    WRITERS[fmt](path, state)
    got = read_state_dict(path)
    assert list(got) == list(state)  # the file's order
    for name, expected in state.items():
        expected = _value(expected)
        assert got[name].dtype == expected.dtype, name
        assert got[name].shape == expected.shape, name
        np.testing.assert_array_equal(got[name], expected, err_msg=name)
        assert got[name].flags.c_contiguous and got[name].flags.writeable, name


def test_zip_archive_name_and_wrapped_checkpoint(tmp_path):
    path = str(tmp_path / "wrapped.pt")
    inner = {"w": np.ones((2, 2), np.float32)}
    torch_files.write_zip(path, inner, archive="my_model")
    assert read_state_dict(path)["w"].shape == (2, 2)
    # A training checkpoint {"state_dict": {...}, "epoch": 3} is unwrapped.
    torch_files.write_legacy(path, {"epoch": 3})  # plain ints pass through read_torch_file
    assert read_torch_file(path) == {"epoch": 3}
    with pytest.raises(StateDictError, match="not tensors: epoch"):
        read_state_dict(path)


def test_bfloat16_widened(tmp_path):
    # numpy has no bfloat16: write the raw bits as an int16 storage, then rename the storage
    # class in the pickle's GLOBAL opcode (a zip member, so its length may change).
    values = np.array([1.0, -2.5, 3.140625], np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.int16)
    path = str(tmp_path / "bf16.pth")
    torch_files.write_zip(path, {"x": bits})
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["archive/data.pkl"] = members["archive/data.pkl"].replace(
        b"torch\nShortStorage\n", b"torch\nBFloat16Storage\n")
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    got = read_state_dict(path)["x"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)


MALICIOUS = {
    "os.system": torch_files.Global("posix", "system"),
    "eval": torch_files.Global("builtins", "eval"),
    "getattr": torch_files.Global("builtins", "getattr"),
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_malicious_pickle_refused_and_not_run(tmp_path, fmt, kind):
    marker = tmp_path / "pwned"
    fn = MALICIOUS[kind]
    if kind == "os.system":
        args = (f"touch {marker}",)
    elif kind == "eval":
        args = (f"open({str(marker)!r}, 'w').close()",)
    else:
        args = (torch_files.Reduce(torch_files.Global("builtins", "__import__"), ("os",)),
                "system")
    path = str(tmp_path / "evil.pth")
    WRITERS[fmt](path, {"w": np.ones(2, np.float32), "payload": torch_files.Reduce(fn, args)})
    with pytest.raises(StateDictError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert f"refusing to load {fn.module}.{fn.name} from {path}" in message
    assert "only tensors and plain containers are allowed" in message
    assert not marker.exists()


def test_refuses_rebuild_from_a_non_storage(tmp_path):
    path = str(tmp_path / "odd.pth")
    torch_files.write_legacy(path, {"t": torch_files.Reduce(
        torch_files.REBUILD_TENSOR, ("not a storage", 0, (1,), (1,), False, None))})
    with pytest.raises(StateDictError, match="not a storage"):
        read_state_dict(path)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_tensor_reaching_past_its_storage_refused(tmp_path, fmt, monkeypatch):
    # A crafted stride must not make as_strided read memory outside the storage.
    layout = torch_files.Tensor.layout

    def bad_layout(self):
        storage, size, stride = layout(self)
        return storage, size, tuple(s * 3 for s in stride)

    monkeypatch.setattr(torch_files.Tensor, "layout", bad_layout)
    path = str(tmp_path / "bad.pth")
    WRITERS[fmt](path, {"w": np.ones((4, 4), np.float32)})
    with pytest.raises(StateDictError, match="reaches past its storage"):
        read_state_dict(path)


def test_truncated_and_foreign_files(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch_files.write_legacy(str(legacy), _state())
    data = legacy.read_bytes()
    for cut in (len(data) - 3, len(data) // 2, 30):
        short = tmp_path / f"cut{cut}.pth"
        short.write_bytes(data[:cut])
        with pytest.raises(StateDictError, match="truncated|not a readable PyTorch file"):
            read_state_dict(str(short))

    zipped = tmp_path / "zipped.pth"
    torch_files.write_zip(str(zipped), _state())
    with zipfile.ZipFile(zipped) as z:
        members = {n: z.read(n) for n in z.namelist()}
    for drop in ("archive/data/0", "archive/data.pkl"):
        damaged = tmp_path / "damaged.pth"
        with zipfile.ZipFile(damaged, "w") as z:
            for n, blob in members.items():
                if n != drop:
                    z.writestr(n, blob[:-4] if n == "archive/data/1" else blob)
        with pytest.raises(StateDictError, match="truncated|not a PyTorch file"):
            read_state_dict(str(damaged))
    cut_zip = tmp_path / "cut_zip.pth"
    cut_zip.write_bytes(zipped.read_bytes()[:200])  # the central directory is gone
    with pytest.raises(StateDictError):
        read_state_dict(str(cut_zip))

    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(StateDictError, match="empty file"):
        read_state_dict(str(tmp_path / "empty.pth"))
    (tmp_path / "text.pth").write_bytes(b"hello, not a pickle at all\n")
    with pytest.raises(StateDictError, match="not a readable PyTorch file"):
        read_state_dict(str(tmp_path / "text.pth"))
    import pickle

    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(StateDictError, match="no zip archive, no legacy magic"):
        read_state_dict(str(tmp_path / "plain.pkl"))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(StateDictError, match="not a PyTorch file"):
        read_state_dict(str(tmp_path / "other.zip"))
    with pytest.raises(StateDictError, match="not found"):
        read_state_dict(str(tmp_path / "missing.pth"))


def test_magic_number_constant():
    assert torch_state_dict.LEGACY_MAGIC == torch_files.LEGACY_MAGIC
