"""`tiny`: the tests' backbone, a 4-conv GroupNorm CNN, registered with `backbones.register`.

It is not a backbone a user would pick, so the package does not ship it; `tests/conftest.py`
registers it for the test session and `tests.helpers.run_with_tiny` for a command run in a
subprocess. Models saved with it load without it: its layers are plain Keras layers.
"""

import keras

from sdl_tf.modeling import backbones

NAME = "tiny"


def tiny(input_shape, weights=None) -> keras.Model:
    """A 4-conv CNN (~100k parameters) so the tests train in seconds on a CPU.

    (B, H, W, 3) in [0, 1] -> (B, H/16, W/16, 128). GroupNorm instead of BatchNorm: its
    statistics are per example, so a batch split across replicas gives exactly the
    single-device result (the distributed tests rely on that).
    """
    del weights
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((32, 64, 128, 128)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False,
                                name=f"conv{i}")(x)
        x = keras.layers.GroupNormalization(groups=8, name=f"gn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
    return keras.Model(inputs, x, name=NAME)


def register() -> backbones.BackboneSpec:
    """Registers `tiny` (idempotent): unit preprocessing, sides >= 16, no ImageNet weights."""
    return backbones.register(NAME, tiny, "unit", min_size=16, has_imagenet=False)
