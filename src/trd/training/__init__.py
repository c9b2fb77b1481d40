"""Training: the distillation loss (method.md §4.1), the loop, checkpoints and distributed helpers."""
