"""Evaluation: ZSL/GZSL metrics, the evaluator and the Figure-3 report."""
