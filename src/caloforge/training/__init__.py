"""Training: the loop, the losses, checkpoints and distribution."""
