"""Tests of sdl_tf.evaluation."""
