"""Scoring without torch: the onnxruntime engine, batches of inputs, heatmaps, thread counts.

Everything here imports numpy, scipy, Pillow, tifffile and (lazily) onnxruntime, never torch, so
that a deployment can score exported models with the runtime install alone. The trainer reads its
inputs with the same code (`trd.data.inputs`), so the two cannot drift.
"""
