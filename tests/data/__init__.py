"""Tests of sdl_tf.data."""
