"""Evaluation: ZSL/GZSL metrics and AP, row usage, the evaluator, per-epoch validation and the
Figure-3 report."""
