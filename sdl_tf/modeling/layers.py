"""The SDL model's custom Keras layers (registered as `sdl_tf>Name`, so saved models load).

* `ImagePreprocessing`: uint8 0-255 RGB -> what a backbone expects, inside the model (so serving
  sends raw pixels); one mode per backbone family (`PREPROCESS_MODES`).
* `RowNormalization`: every row of A_i rescaled to one l2 norm (`ModelConfig.row_scale`).
* `RowAttentionPooling`: one learned spatial softmax and projection per row of A_i
  (`ModelConfig.pooling="attention"`).

Registered names do not depend on the module: these classes lived in `backbones` and `model`
before, and models saved then load unchanged.
"""

from __future__ import annotations

import keras

# Append only: saved models store the mode name.
PREPROCESS_MODES = ("caffe", "raw", "unit", "symmetric", "lite")


@keras.saving.register_keras_serializable(package="sdl_tf")
class ImagePreprocessing(keras.layers.Layer):
    """Maps uint8/0-255 RGB images to what a backbone expects, inside the model.

    Modes: `caffe` (RGB->BGR, subtract the ImageNet channel means: Keras ResNet weights),
    `raw` (0-255 floats: backbones with their own rescaling, e.g. MobileNetV3/EfficientNet),
    `unit` ([0, 1]: TF-Hub image models, TResNet, the demo CNN), `symmetric` ([-1, 1]), `lite`
    ((x - 127) / 128: EfficientNet-Lite, the MEAN_RGB / STDDEV_RGB of TF's
    efficientnet_lite_builder; `symmetric` would be off by up to 0.8 %).

    Args:
        mode: one of `PREPROCESS_MODES`.

    Call:
        images: (B, H, W, 3) any numeric dtype, 0-255 RGB. Returns float (B, H, W, 3).
    """

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"preprocessing mode must be one of {PREPROCESS_MODES}, got {mode!r}")
        self.mode = mode

    def call(self, images):
        x = keras.ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            x = keras.ops.flip(x, axis=-1)  # RGB -> BGR
            mean = keras.ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=x.dtype)
            return x - mean
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "symmetric":
            return x / 127.5 - 1.0
        if self.mode == "lite":
            return (x - 127.0) / 128.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config



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
