"""The SDL model: image -> M x d matrix A_i of principal directions (paper section 3.1, Figure 2).

    images uint8 (B, H, W, 3) -> ImagePreprocessing -> backbone -> global average pooling
    -> dropout -> Dense(M * d, no bias) -> reshape -> "matrices" float32 (B, M, d)
    [-> RowNormalization when ModelConfig.row_scale > 0: each row l2-normalised x scale]
    (`pooling="attention"`: RowAttentionPooling replaces pooling, dropout and projection; the
    layers are in `sdl_tf.modeling.layers`.)

Label scores are then s_ij = max_m (A_i t_j) (eq. 1, `sdl_tf.modeling.scoring`), computed outside
the model so that new (unseen) label vectors can be scored without touching it. A trained run's
model is loaded with `sdl_tf.modeling.run_dir.load`.
"""

from __future__ import annotations

import keras

from sdl_tf.config import ModelConfig
from sdl_tf.modeling import backbones, layers


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
    x = layers.ImagePreprocessing(mode, name="preprocessing")(images)
    features = backbone(x)
    # The (B, M, d) rows are the output "matrices" unless unit-norm rows follow them.
    rows_name = "rows" if cfg.row_scale > 0 else "matrices"
    if cfg.pooling == "attention":
        if len(features.shape) != 4:
            raise backbones.BackboneError(
                f"pooling=attention needs a feature map; backbone {cfg.backbone} returns "
                f"rank-{len(features.shape)} features")
        rows = layers.RowAttentionPooling(cfg.num_rows, cfg.dim, cfg.dropout, dtype="float32",
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
        rows = layers.RowNormalization(cfg.row_scale, dtype="float32", name="matrices")(rows)
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
