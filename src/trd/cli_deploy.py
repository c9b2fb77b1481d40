"""The ``trd`` commands that run a fitted model on a line: ``export`` (ONNX for a line PC), ``serve``
(HTTP and the review page), ``monitor`` (drift over scored scans) and ``predict-merge`` (the parts of
a sharded predict). Like every command they import what they need when they run; `trd.cli` registers
them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .checkpoint import check_model_file
from .cli_setup import engine_options, full_api, log, monitor_options
from .cli_store import store_options


@click.command(short_help="Check scored scans for drift: flag rate, p-values, input health.")
@click.argument("source")
@monitor_options()
@click.option("--model-sha", default=None,
              help="For a result store: the model whose results are checked (sha256 or its first 8+ digits; "
                   "default: the model of the newest result).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of lines.")
def monitor(source, window, alpha, model_sha, as_json) -> None:
    """Check scored scans for drift: flag rate, p-values, input health (docs/MONITOR.md).

    SOURCE is a predictions.jsonl, a `trd predict --out` folder, or a result store (results.db, or a
    postgresql:// URL). The records are replayed in the order they were scored; the checks on the last --window scans are printed, with where each alarm
    was first raised. Exit code 1 when a check is in alarm on the last window (cron and CI can act
    on it), 2 on bad input or settings. Needs only the runtime install.

    \b
    Examples:
      trd monitor preds/
      trd monitor preds/predictions.jsonl --window 100 --json
      trd monitor runs/puck/results.db
    """
    from .runtime.monitor import MonitorSettings
    from .workflows.monitor import monitor as run_monitor, report_lines

    summary = run_monitor(source, MonitorSettings(window=window, alpha=alpha), model=model_sha, log=log)
    click.echo(json.dumps(summary, indent=2) if as_json else "\n".join(report_lines(summary)))
    if summary["alarm"]:
        sys.exit(1)


@click.command("predict-merge", short_help="Merge the output folders of `trd predict --shard` parts into one.")
@click.argument("parts", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--overwrite", is_flag=True, help="Replace predictions of another model in --out.")
def predict_merge(parts, out, overwrite) -> None:
    """Merge the output folders of `trd predict --shard` parts (of one model) into one.

    Checks that every part was scored by the same model, copies each part's complete records with
    their pictures, writes a scan (its content) found in two parts once, and continues when run
    again. Prints a JSON summary.

    \b
    Example:
      trd predict-merge preds/part-* --out preds/all
    """
    from .workflows.shards import merge_predictions

    summary = merge_predictions(parts, out, overwrite=overwrite, log=log)
    click.echo(json.dumps(summary, indent=2))


@click.command(short_help="Export a model.pt to ONNX for onnxruntime (line PCs, trd serve).")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True, help="RUN/model.pt")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True,
              help="Export format (ONNX, run by onnxruntime).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The ONNX file to write.")
def export(model_path, fmt, out) -> None:
    """Export the detector (two inputs; fused map, per-branch maps, score) for deployment.

    Prints the path written. The file carries its config and thresholds (needs the training install).

    \b
    Example:
      trd export --model runs/puck/model.pt --out puck.onnx
    """
    from .console import Ticker

    check_model_file(model_path, "--model")
    api = full_api()
    with Ticker("export", log):
        written = api.export(model_path, out, fmt=fmt, log=lambda line: log(f"export: {line}"))
    click.echo(str(written))


@click.command(short_help="Serve a model over HTTP, with a review page at /.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="An exported .onnx file (runtime install) or a model.pt (needs the training install).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any other than loopback needs a token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: a free port.")
@click.option("--token", default=None, help="Require 'Authorization: Bearer TOKEN' (default: $TRD_TOKEN).")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(min=1),
              help="Requests scored together in one engine call.")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="How long the first request of a batch waits for others.")
@click.option("--queue", default=32, show_default=True, type=click.IntRange(min=1),
              help="Requests that may wait for the engine; more get 503 with Retry-After.")
@click.option("--max-upload-mb", default=64.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest request body (MiB); larger ones get 413.")
@click.option("--max-pixels", default=None, type=click.IntRange(min=1),
              help="Largest uploaded image or cloud, in pixels (default: the model's data.max_image_pixels).")
@click.option("--pixel-budget", default=32_000_000, show_default=True, type=click.IntRange(min=1),
              help="Pixels of the pairs decoded at once (memory: about 85 bytes each); larger pairs get 413, "
                   "pairs that do not fit now wait.")
@click.option("--upload-timeout-s", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Time an upload may take from its arrival; slower ones get 408.")
@click.option("--grace-s", default=20.0, show_default=True, type=click.FloatRange(min=0),
              help="After SIGTERM, time that uploads still coming in get to finish.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A Host name this service answers to besides localhost and IP addresses (repeatable).")
@click.option("--recent", default=20, show_default=True, type=click.IntRange(min=1),
              help="Results listed by GET /v1/recent (the page's list), newest first, from the store.")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where POST /v1/threshold (the page's 'write a model file') writes new model files "
                   "(default: beside the served model).")
@monitor_options("monitor-")
@store_options
@engine_options
def serve(model_path, host, port, token, max_batch, max_wait_ms, queue, max_upload_mb, max_pixels, pixel_budget,
          upload_timeout_s, grace_s, allowed_hosts, recent, models_dir, window, alpha, engine, threads, ep,
          precision, store, store_files, retain) -> None:
    """Serve a model over HTTP: POST /v1/score, GET /v1/model, the review page at / (docs/SERVE.md).

    Prints the URL once it accepts requests; SIGTERM answers the requests in flight, then exits 0.

    \b
    Examples:
      trd serve --model puck.onnx
      TRD_TOKEN=s3cret trd serve --model puck.onnx --host 0.0.0.0 --port 8000
    """
    from .runtime.monitor import MonitorSettings

    from .serve.server import check_store, serve as run_serve  # a model.pt whose export is cached needs no torch

    settings = MonitorSettings(window=window, alpha=alpha)  # checked before the (slow) model load
    check_store(store)
    check_model_file(model_path, "--model-or-onnx")

    run_serve(model_path, host=host, port=port, token=token, max_batch=max_batch, max_wait_ms=max_wait_ms, queue=queue,
              max_upload_mb=max_upload_mb, max_pixels=max_pixels, pixel_budget=pixel_budget,
              upload_timeout_s=upload_timeout_s, grace_s=grace_s, allowed_hosts=allowed_hosts, recent=recent,
              models_dir=models_dir, threads=threads, engine=engine, store=store, store_files=store_files,
              retain=retain, monitor=settings, ep=ep, precision=precision, log=log)
