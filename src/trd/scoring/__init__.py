"""Scoring: validation normalisation, fusion, smoothing and deployment thresholds (docs/METHOD.md §5).

Modules: `maps` (the Scorer, torch), `threshold` (thresholds and their guarantee, numpy only, so the
runtime install reads them), `calibrate`, `border`, `counterfactual`, `infer`. Import them by name;
this package imports nothing itself, so ``trd.scoring.threshold`` loads no torch.
"""
