"""Training: the distillation loss (docs/METHOD.md §4.1), the loop, checkpoints and distributed helpers."""
