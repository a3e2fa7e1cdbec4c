"""Semantic Diversity Learning (SDL) for zero-shot multi-label classification in TF/Keras 3."""

__version__ = "0.1.0"
