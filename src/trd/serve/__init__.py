"""`trd serve`: an HTTP service that scores RGB + 3D pairs with one loaded model (docs/SERVE.md).

`server` starts it (uvicorn), `app` holds the endpoints (FastAPI), `uploads` receives and reads the
files with predict's own code, `batcher` scores concurrent requests together, `results` draws images
and keeps the recent results, `metrics` writes the Prometheus text. Torch-free with an ONNX model.
"""
