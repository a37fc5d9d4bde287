"""Training: the loop, solvers, learning-rate policies, augmentations, checkpoints."""
