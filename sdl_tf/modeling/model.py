"""The SDL model: image -> M x d matrix A_i of principal directions (paper section 3.1, Figure 2).

    images uint8 (B, H, W, 3) -> ImagePreprocessing -> backbone -> global average pooling
    -> dropout -> Dense(M * d, no bias) -> reshape -> "matrices" float32 (B, M, d)
    [-> RowNormalization when ModelConfig.row_scale > 0: each row l2-normalised x scale]

Label scores are then s_ij = max_m (A_i t_j) (eq. 1, `sdl_tf.modeling.scoring`), computed outside
the model so that new (unseen) label vectors can be scored without touching it.
"""

from __future__ import annotations

import os

import keras

from sdl_tf.config import ModelConfig
from sdl_tf.modeling import backbones
from sdl_tf.utils import gfile_utils

FINAL_MODEL_NAME = "final.keras"


@keras.saving.register_keras_serializable(package="sdl_tf")
class RowNormalization(keras.layers.Layer):
    """Rescales every row of A_i to the same l2 norm `scale` (optional; not in the paper).

    The ranking loss (eq. 2) compares labels within one image, so nothing ties the scale of
    A_i across images, while mAP ranks images per label: with raw rows an image's scores grow
    with its feature norm (contrast, number of objects). Unit rows make eq. (1) scale x the
    cosine between a label vector and the image's best row, comparable across images; `scale`
    sets the sharpness of the softplus of eq. (2) on those cosines.

    Args:
        scale: the common row norm (> 0).

    Call:
        rows: (B, M, d) float. Returns (B, M, d), each row of norm `scale` (0 rows stay 0).
    """

    def __init__(self, scale: float = 8.0, **kwargs):
        super().__init__(**kwargs)
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)

    def call(self, rows):
        squared = keras.ops.sum(keras.ops.square(rows), axis=-1, keepdims=True)
        # The epsilon keeps an all-zero row (and its gradient) finite.
        return self.scale * rows * keras.ops.rsqrt(squared + 1e-12)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="sdl_tf")
class RowAttentionPooling(keras.layers.Layer):
    """One learned spatial softmax per row of A_i (optional; not in the paper).

    The paper pools the feature map once (global average) and projects that one vector to all
    M rows, so every row sees every object of the image mixed together. With attributes bound
    to objects ("striped circle" + "dotted square") a negative that holds both words on
    different objects ("striped square") then scores like a positive. Here row m pools the map
    with its own weights softmax_hw(w_m . f_hw + b_m) and has its own projection, so a row can
    read one object and eq. (1)'s max picks the row whose object fits the label. The logits
    start at zero: at initialisation every row is global average pooling, as in the paper.

    Args:
        num_rows: M.
        dim: d, the label-vector dimension.
        dropout: dropout rate on the pooled features, before the projections.

    Call:
        features: (B, H, W, C) float. Returns (B, M, d) float32.
    """

    def __init__(self, num_rows: int, dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_rows = int(num_rows)
        self.dim = int(dim)
        self.dropout_rate = float(dropout)
        self.dropout = keras.layers.Dropout(self.dropout_rate)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.attention_kernel = self.add_weight(
            name="attention_kernel", shape=(channels, self.num_rows), initializer="zeros")
        self.attention_bias = self.add_weight(
            name="attention_bias", shape=(self.num_rows,), initializer="zeros")
        # Same fan-in as the paper's Dense(C -> M * d): one (C, d) projection per row, no bias.
        self.projection_kernel = self.add_weight(
            name="projection_kernel", shape=(self.num_rows, channels, self.dim),
            initializer="glorot_uniform")

    def call(self, features, training=None):
        ops = keras.ops
        features = ops.cast(features, self.compute_dtype)
        shape = ops.shape(features)
        flat = ops.reshape(features, (shape[0], shape[1] * shape[2], shape[3]))  # (B, HW, C)
        logits = ops.einsum("bpc,cm->bpm", flat, self.attention_kernel) + self.attention_bias
        weights = ops.softmax(ops.cast(logits, "float32"), axis=1)  # over the HW positions
        pooled = ops.einsum("bpm,bpc->bmc", weights, ops.cast(flat, "float32"))  # (B, M, C)
        pooled = self.dropout(pooled, training=training)
        return ops.einsum("bmc,mcd->bmd", pooled, ops.cast(self.projection_kernel, "float32"))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_rows, self.dim)

    def get_config(self):
        return {**super().get_config(), "num_rows": self.num_rows, "dim": self.dim,
                "dropout": self.dropout_rate}


def build_model(cfg: ModelConfig) -> keras.Model:
    """Builds the functional SDL model.

    Args:
        cfg: model config; `cfg.dim` must be the label-vector dimension d.

    Returns:
        A `keras.Model` with input `"images"` uint8 (None, H, W, 3) 0-255 RGB and output
        `"matrices"` float32 (None, M, d). Under a mixed-precision policy the body runs in
        float16 but the output layer is float32 (the ranking loss needs the precision).
    """
    if cfg.dim < 1:
        raise ValueError("ModelConfig.dim must be set to the label-vector dimension")
    size = cfg.image_size
    images = keras.Input((size, size, 3), dtype="uint8", name="images")
    backbone, mode = backbones.build_backbone(
        cfg.backbone, (size, size, 3), cfg.weights, trainable=cfg.trainable_backbone
    )
    x = backbones.ImagePreprocessing(mode, name="preprocessing")(images)
    features = backbone(x)
    # The (B, M, d) rows are the output "matrices" unless unit-norm rows follow them.
    rows_name = "rows" if cfg.row_scale > 0 else "matrices"
    if cfg.pooling == "attention":
        if len(features.shape) != 4:
            raise backbones.BackboneError(
                f"pooling=attention needs a feature map; backbone {cfg.backbone} returns "
                f"rank-{len(features.shape)} features")
        rows = RowAttentionPooling(cfg.num_rows, cfg.dim, cfg.dropout, dtype="float32",
                                   name=rows_name)(features)
    else:
        if len(features.shape) == 4:
            features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
        elif len(features.shape) != 2:
            raise backbones.BackboneError(
                f"backbone {cfg.backbone} returns rank-{len(features.shape)} features; "
                "need 2 or 4")
        x = keras.layers.Dropout(cfg.dropout, name="dropout")(features)
        # Bias-free: A_i is linear in the pooled features (Figure 2's modified last FC).
        x = keras.layers.Dense(cfg.num_rows * cfg.dim, use_bias=False, dtype="float32",
                               name="projection")(x)
        rows = keras.layers.Reshape((cfg.num_rows, cfg.dim), dtype="float32", name=rows_name)(x)
    if cfg.row_scale > 0:
        rows = RowNormalization(cfg.row_scale, dtype="float32", name="matrices")(rows)
    return keras.Model(images, rows, name="sdl")


# The first layer after the backbone, by pooling and row normalisation (build_model): avg
# pooling of a feature map, dropout of a pooled backbone, or the attention rows.
_HEAD_ENTRY_LAYERS = ("avg_pool", "dropout", "rows", "matrices")


def split_model(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Splits an SDL model (`sdl_tf.modeling.model.build_model`) into backbone and head.

    Returns:
        (feature_model: images uint8 (B, H, W, 3) -> features (B, h, w, F) or (B, F),
         head: features -> matrices float32 (B, M, d)); both share `model`'s weights.
    """
    names = {layer.name for layer in model.layers}
    entry = next((n for n in _HEAD_ENTRY_LAYERS if n in names), None)
    if entry is None:
        raise ValueError(f"model {model.name!r} has none of the head layers "
                         f"{_HEAD_ENTRY_LAYERS}: not an SDL model")
    features = model.get_layer(entry).input
    return (keras.Model(model.input, features, name="sdl_backbone"),
            keras.Model(features, model.output, name="sdl_head"))


def load_model(path: str, compile: bool = False, safe_mode: bool = True) -> keras.Model:
    """Loads a `.keras` SDL model (custom layers and `SDLLoss` are registered on import).

    Args:
        path: the `.keras` file.
        compile: restore the compile state (loss, optimizer) too.
        safe_mode: Keras safe mode; must be False for `hub:` backbones, whose `TFSMLayer`
            reloads an external SavedModel (Keras refuses that in safe mode).
    """
    # Registers SDLLoss so compiled models deserialize; absent only mid-development.
    try:
        import sdl_tf.modeling.losses  # noqa: F401
    except ImportError:
        pass
    if not gfile_utils.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    with gfile_utils.local_copy(path) as local:  # e.g. gs://: Keras loads from a local copy
        return keras.saving.load_model(local, compile=compile, safe_mode=safe_mode)


def require_model_dir(model_dir: str, filename: str = FINAL_MODEL_NAME) -> None:
    """Checks that `model_dir` is a finished training run (model file + label space).

    Raises:
        FileNotFoundError: naming what is missing and the command that writes it.
    """
    from sdl_tf import cli

    if not model_dir:
        raise FileNotFoundError(f"no model dir given: {cli.missing_model_hint('DIR')}")
    if not gfile_utils.isdir(model_dir):
        raise FileNotFoundError(f"model dir {model_dir!r} does not exist (no finished training "
                                f"run there): {cli.missing_model_hint(model_dir)}")
    for name in (filename, "labels.json"):
        if not gfile_utils.isfile(os.path.join(model_dir, name)):
            raise FileNotFoundError(
                f"model dir {model_dir!r} has no {name}: not a finished training run "
                f"(an unfinished one resumes with the same command); "
                f"{cli.missing_model_hint(model_dir)}")


def load_model_dir(model_dir: str, filename: str = FINAL_MODEL_NAME):
    """Loads a trained model directory written by `sdl_tf.training.trainer.train`.

    Args:
        model_dir: the directory (contains `final.keras`, `labels.json`, `label_vectors.npy`).
        filename: the model file inside it.

    Returns:
        (model, label_space): the Keras model and the `LabelSpace` it was trained with.
    """
    from sdl_tf.labels.label_space import LabelSpace

    require_model_dir(model_dir, filename)
    path = os.path.join(model_dir, filename)
    # Our own training output: a hub backbone (TFSMLayer) needs Keras' unsafe mode to reload.
    safe = True
    cfg_path = os.path.join(model_dir, "config.json")
    if gfile_utils.isfile(cfg_path):
        from sdl_tf.config import load_config

        safe = not load_config(cfg_path).model.backbone.startswith(backbones.HUB_PREFIX)
    return load_model(path, safe_mode=safe), LabelSpace.load(model_dir)
