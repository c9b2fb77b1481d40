"""Training: the distillation loss (docs/METHOD.md §4.1), the loop (`trainer`), frozen-teacher
feature caching, and the process set-up it runs in (`device`: seed, device, precision, torchrun)."""
