"""The compiled CPU kernel of the SDL loss's label-set terms: build on first use, load, call.

`sdl_tf/cc/pairwise_op.cc` is a TensorFlow custom op (`SdlPairwiseSoftplus`) that computes, for
each image, the pairwise sum of eq. (2), its derivative w.r.t. the scores and the positives'
vector variance of the SDW (eq. 3) in one pass (see `sdl_tf/cc/pairwise_kernel.h` for the
math). It makes the pairwise term ~10x faster than the XLA-compiled kernel of `sdl_tf.losses`
at the Open Images shape, which brings the loss to ~1.2x its bare score GEMM
(`benchmarks/bench_loss.py`).

A custom op must be compiled against the installed TensorFlow, so it is built on this machine
the first time it is needed (~15 s with g++; `make` does it at install time) into a cache
directory, keyed by the sources, the TensorFlow version, the compiler and the CPU's instruction
set (it is built with -march=native), and reused afterwards. Concurrent processes (pytest-xdist
workers, multi-worker training) wait on a file lock instead of compiling twice; the library is
written under a temporary name and renamed, so a crash never leaves a truncated library behind.

When the kernel cannot be used (no C++ compiler, a failed build, or `SDL_TF_NATIVE_OPS=0`), `load`
returns None after one warning that says why, and the loss uses its XLA kernel: same values,
slower. Nothing is built or loaded at import time.

    python -m sdl_tf.native_ops      # build (if needed) and print the library path

Environment:
    SDL_TF_NATIVE_OPS: "0" disables the compiled kernel.
    SDL_TF_CACHE_DIR: cache directory (default: $XDG_CACHE_HOME/sdl_tf or ~/.cache/sdl_tf).
    CXX: the C++ compiler (default: g++, else c++).
"""

import fcntl
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings

import tensorflow as tf

from sdl_tf import atomic_io

_LOG = logging.getLogger(__name__)
_SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cc")
_SOURCES = ("pairwise_op.cc", "pairwise_kernel.h")
_OP_SOURCE = "pairwise_op.cc"
_WARNING_FLAGS = ("-Wno-deprecated-declarations", "-Wno-ignored-attributes")

_lock = threading.Lock()
_state = {"loaded": False, "module": None, "error": None}


class BuildError(RuntimeError):
    """The kernel could not be compiled; the message includes the compiler's output."""


def cache_dir():
    """The directory that holds the compiled libraries."""
    root = os.environ.get("SDL_TF_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "sdl_tf")
    return os.path.join(root, "native_ops")


def _compiler():
    cxx = os.environ.get("CXX")
    if cxx:
        return cxx
    return shutil.which("g++") or shutil.which("c++") or "g++"


def _cpu_features():
    """The CPU's instruction-set flags (-march=native builds only run on such CPUs)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _command(output):
    source = os.path.join(_SOURCE_DIR, _OP_SOURCE)
    return (
        [_compiler(), "-shared", "-fPIC", "-O3", "-march=native", *_WARNING_FLAGS]
        + [f"-I{_SOURCE_DIR}", source, "-o", output]
        + list(tf.sysconfig.get_compile_flags())
        + list(tf.sysconfig.get_link_flags())
    )


def library_path():
    """Where the library for this machine, TensorFlow and source version is (or will be)."""
    key = hashlib.sha256()
    for name in _SOURCES:
        with open(os.path.join(_SOURCE_DIR, name), "rb") as f:
            key.update(f.read())
    try:
        version = subprocess.run(
            [_compiler(), "--version"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        version = "missing"
    for part in (tf.__version__, " ".join(_command("out")), version, _cpu_features()):
        key.update(part.encode())
    return os.path.join(cache_dir(), f"sdl_pairwise_{key.hexdigest()[:16]}.so")


def build(force=False):
    """Compiles the kernel into the cache unless it is already there; returns its path.

    Args:
        force: rebuild even if a library is cached.

    Raises:
        BuildError: the compiler is missing or failed (its output is in the message).
    """
    path = library_path()
    if os.path.exists(path) and not force:
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be compiling the same library
        if os.path.exists(path) and not force:
            return path
        # Compiled into a private directory, then published with one atomic rename.
        with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp_dir:
            tmp = os.path.join(tmp_dir, os.path.basename(path))
            command = _command(tmp)
            _LOG.warning("sdl_tf: compiling the SDL loss kernel (once per machine, ~15 s)")
            try:
                proc = subprocess.run(command, capture_output=True, text=True, check=False)
            except OSError as err:
                raise BuildError(f"cannot run the C++ compiler {command[0]!r}: {err}") from err
            if proc.returncode != 0:
                raise BuildError(
                    f"compiling {_OP_SOURCE} failed (exit {proc.returncode}):\n"
                    f"{' '.join(command)}\n{proc.stderr[-4000:]}"
                )
            with open(tmp, "rb") as f:
                library = f.read()
            atomic_io.atomic_write(path, lambda out: out.write(library))
    return path


def load():
    """The loaded op module, building it if needed; None (after one warning) if unusable."""
    with _lock:
        if _state["loaded"]:
            return _state["module"]
        _state["loaded"] = True
        if os.environ.get("SDL_TF_NATIVE_OPS", "1") == "0":
            _state["error"] = "disabled by SDL_TF_NATIVE_OPS=0"
            return None
        try:
            _state["module"] = tf.load_op_library(build())
        except (BuildError, OSError, tf.errors.OpError) as err:
            _state["error"] = str(err)
            warnings.warn(
                "sdl_tf: the compiled SDL loss kernel is unavailable, using the slower XLA "
                f"kernel (same values). Reason: {err}",
                RuntimeWarning,
                stacklevel=2,
            )
        return _state["module"]


def unavailable_reason():
    """Why `load` returned None (None if it has not been called or succeeded)."""
    return _state["error"]


def _reset_for_tests():
    """Forgets the loaded state so that `load` runs again (tests only)."""
    with _lock:
        _state.update(loaded=False, module=None, error=None)


def pairwise_terms(module, scores, targets, vectors):
    """Runs the op with its gradient: eq. (2)'s pair sums and eq. (3)'s variance per image.

    Args:
        module: the result of `load()` (not None).
        scores: (B, C) float32 or float64 scores (eq. 1).
        targets: (B, C) targets in the dtype of `scores`; > 0.5 is positive.
        vectors: (C, d) label vectors in the dtype of `scores`.

    Returns:
        pair_sum (B,): sum over the image's positive-negative pairs of softplus(s_k - s_j),
            differentiable w.r.t. `scores` (first order);
        pos_variance (B,): sum over dimensions of the unbiased variance of the positives'
            vectors, 0 for |P| < 2 (no gradient: the SDW is a constant weight).
    """

    @tf.custom_gradient
    def terms(scores):
        pair_sum, d_scores, variance = module.sdl_pairwise_softplus(scores, targets, vectors)

        def grad(upstream, *unused):  # upstream: (B,), one value per image sum
            del unused
            return upstream[:, None] * d_scores

        return (pair_sum, tf.stop_gradient(variance)), grad

    return terms(scores)


def main():
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(build(force="--force" in sys.argv[1:]))
    except BuildError as err:
        print(err, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
