"""Test-session set-up shared by every test module.

TensorFlow fixes its device list when it first initialises, so the two logical CPU devices
that the MirroredStrategy tests need (DEVELOPERS.md: "2 logical CPUs") are configured here,
once, before any test touches TensorFlow. Ops without an explicit placement still run on
CPU:0, so single-device tests are unaffected.

The tests' `tiny` backbone (`tests.helpers.tiny_backbone`) is registered here for the whole
session; a command run in a subprocess registers it through `tests.helpers.run_with_tiny`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

from tests.helpers import tiny_backbone  # noqa: E402

tiny_backbone.register()

# Reference values of the loss (eqs. 1-5) and the ZSL/GZSL metrics, shipped with the tests;
# tests/testdata/golden/README.md says what each array is and where the values come from.
GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "golden")


@pytest.fixture(scope="session")
def golden_dir():
    """Path of the golden values (`tests/testdata/golden`)."""
    return GOLDEN_DIR
