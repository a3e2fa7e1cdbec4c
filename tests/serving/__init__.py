"""Tests of sdl_tf.serving."""
