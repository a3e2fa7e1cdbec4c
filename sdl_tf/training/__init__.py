"""Training: the task (model, optimizer, the SDL loss, the step) and the loop (epochs,
strategy, checkpoints, resume, TensorBoard)."""
