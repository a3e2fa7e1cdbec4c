"""Tests of sdl_tf.training."""
