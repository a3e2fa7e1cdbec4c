"""Tests of sdl_tf.labels."""
