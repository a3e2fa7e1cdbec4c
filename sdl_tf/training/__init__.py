"""The training loop: distribution strategy, checkpoints, TensorBoard."""
