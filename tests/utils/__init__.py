"""Tests of sdl_tf.utils."""
