"""Deployment exports of a trained detector (ONNX, see :mod:`trd.export.onnx`)."""
