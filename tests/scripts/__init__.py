"""Tests of the scripts/ folder."""
