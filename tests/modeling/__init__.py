"""Tests of sdl_tf.modeling."""
