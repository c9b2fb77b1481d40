"""Scoring: the score math from raw maps to decisions (docs/METHOD.md §5).

Modules: `maps` (the Scorer: z-score, fuse, blur, max; torch), `threshold` (thresholds and their
guarantee; numpy only, so the runtime install reads them), `border` (where image maxima sit).
Nothing here reads files, runs the model or loops over datasets. This package imports nothing
itself, so ``trd.scoring.threshold`` loads no torch.
"""
