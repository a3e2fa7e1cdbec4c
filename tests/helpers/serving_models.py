"""Tiny exportable models, label spaces, images and model dirs shared by the serving tests.

Any model meeting the serving contract (uint8 'images' (None, 32, 32, 3) -> 'matrices' (M, d))
can be exported; these are the smallest such models, so export/serve tests stay fast.
"""

import io
import os

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.modeling import run_dir
from sdl_tf.serving import export_lib, signatures

SIZE, M, D = 32, 3, 8
NAMES = ("red", "green", "blue", "circle", "square")
UNSEEN = (False, False, True, False, True)
# Images and models are tiny; float32 results of the same graph on the same CPU agree to ~1e-6,
# the tolerance covers op-fusion differences between the Keras call and the loaded graph.
ATOL = 1e-5


def numpy_scores_eq1(matrices, vectors):
    """Reference eq. (1) by brute force: s_nc = max_m sum_d A[n, m, d] t[c, d]."""
    return np.einsum("nmd,cd->nmc", matrices, vectors).max(axis=1)


def tiny_model(seed: int = 0) -> keras.Model:
    """Any model meeting the contract: uint8 'images' (None, 32, 32, 3) -> 'matrices' (M, d)."""
    keras.utils.set_random_seed(seed)
    images = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="images")
    x = keras.layers.Rescaling(1.0 / 255.0)(keras.ops.cast(images, "float32"))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(M * D)(x)
    matrices = keras.layers.Reshape((M, D), name="matrices")(x)
    return keras.Model(images, matrices)


def tiny_label_space(seed: int = 0) -> LabelSpace:
    rng = np.random.default_rng(seed)
    return LabelSpace.create(NAMES, UNSEEN, rng.normal(size=(len(NAMES), D)), source="random")


def encode(array: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


def make_images(n: int, seed: int = 0, fmt: str = "JPEG") -> list[bytes]:
    """n random-colour images of assorted sizes (so the in-graph resize is exercised)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 24 + 8 * (i % 3), 40 - 4 * (i % 4)
        base = rng.integers(0, 256, size=(1, 1, 3))
        noise = rng.integers(-40, 40, size=(h, w, 3))
        out.append(encode(np.clip(base + noise, 0, 255).astype(np.uint8), fmt))
    return out


def export_tiny(base_dir: str, version: int = 1, top_k: int = 3):
    model, ls = tiny_model(), tiny_label_space()
    path = export_lib.export_saved_model(model, ls, base_dir, "sdl", version, top_k=top_k)
    return model, ls, path


def write_model_dir(model_dir: str):
    """A model dir as training writes it (final.keras from build_model + tiny backbone, labels)."""
    from sdl_tf.config import ModelConfig
    from sdl_tf.modeling.model import build_model

    os.makedirs(model_dir, exist_ok=True)
    keras.utils.set_random_seed(3)
    model = build_model(ModelConfig(backbone="tiny", weights="none", image_size=SIZE, num_rows=M,
                                    dim=D))
    model.save(run_dir.path(model_dir, run_dir.FINAL_MODEL_FILE))
    ls = tiny_label_space()
    ls.save(model_dir)
    return model, ls


def keras_reference(model, image_bytes):
    """Keras-model matrices on the same decoded images (decode_and_resize run eagerly)."""
    images, ok = signatures.decode_and_resize(tf.constant(image_bytes, tf.string), (SIZE, SIZE))
    return np.asarray(model(images, training=False)), ok.numpy()


def write_word2vec(path, words, seed=0):
    """A word2vec text file ("<count> <dim>" header) with random d=D vectors."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(len(words), D)).astype(np.float32)
    with open(path, "w") as f:
        f.write(f"{len(words)} {D}\n")
        for w, v in zip(words, vectors, strict=True):
            f.write(w + " " + " ".join(f"{x:.6f}" for x in v) + "\n")
    return dict(zip(words, vectors, strict=True))
