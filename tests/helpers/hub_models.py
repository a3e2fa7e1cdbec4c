"""A stand-in TF-Hub feature-vector model, saved as a local SavedModel (`hub:<path>` backbones)."""

import numpy as np
import tensorflow as tf


class Features(tf.Module):
    """Mean RGB (inputs in [0, 1], (B, H, W, 3)) times W (3, F): {"feature_vector": (B, F)}."""

    def __init__(self, w):
        super().__init__()
        self.w = tf.Variable(w)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return {"feature_vector": tf.reduce_mean(images, axis=[1, 2]) @ self.w}


def save_features_model(path: str, w: np.ndarray) -> str:
    """Saves `Features(w)` with its `serving_default` signature at `path`; returns `path`."""
    module = Features(np.asarray(w, np.float32))
    tf.saved_model.save(module, path, signatures={"serving_default": module.__call__})
    return path
