"""The ``trd`` command: a thin layer over `trd.api`. Errors a user can fix print one line (exit codes:
`trd.errors`).

Commands import what they need when they run: ``trd predict --onnx``, ``trd serve --model X.onnx``,
``synth``, ``settings`` and ``prepare-eyecandies`` work with the runtime install alone (no torch); the others
need the training install and say so in one line where it is missing. Argument and path errors (a
missing --data folder, a wrong --category, a missing or wrong-kind --model file, a bad --input) are
found before torch is imported, so they are reported in about a second. Warnings are aggregated per
run (`trd.console.WarningTally`).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

from .checkpoint import check_model_file
from .cli_deploy import export, monitor, predict_merge, serve
from .cli_setup import FORMAT_HELP, check_folder, engine_options, full_api, log as _log, settings, weights
from .cli_store import store_group, store_options
from .config import FORMATS, XYZ_UNITS, load_config
from .console import WarningTally
from .errors import ConfigError, TRDError


def _config_options(f):
    """Options shared by every command that builds a config."""
    f = click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="TOML config file ([data] [model] [train] [score] sections; 'trd settings' lists them).")(f)
    f = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override one setting, e.g. --set train.epochs=50 (repeatable; 'trd settings' lists "
                          "every setting).")(f)
    f = click.option("--backbone-weights", default=None,
                     help="Teacher weights: imagenet (torchvision's file, downloaded on first use; offline: "
                          "'trd weights'), none (random, tests only) or a file.")(f)
    return f


def _build_config(config_file, overrides, backbone_weights, **data):
    extra = [f"data.{k}={v}" for k, v in data.items() if v is not None]
    if backbone_weights is not None:
        extra.append(f"model.weights={backbone_weights}")
    # Explicit --set wins over the convenience flags.
    return load_config(config_file, [*extra, *overrides])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trd-anomaly")
def cli() -> None:
    """Multimodal (RGB + 3D) industrial anomaly detection with Tuned Reverse Distillation."""


@cli.command(short_help="Write a synthetic dataset in MVTec 3D-AD layout.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--size", default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True)
@click.option("--categories", default=None, help="Comma-separated synthetic categories (default: all).")
@click.option("--n-train", default=40, show_default=True)
@click.option("--n-validation", default=10, show_default=True)
@click.option("--n-test-good", default=10, show_default=True)
@click.option("--n-test-per-defect", default=8, show_default=True)
def synth(out, size, seed, categories, n_train, n_validation, n_test_good, n_test_per_defect) -> None:
    """Write a synthetic dataset in MVTec 3D-AD layout (RGB PNG, XYZ TIFF, GT PNG).

    Prints the sample counts per category, split and defect type as JSON.

    \b
    Example:
      trd synth --out data/synth --size 128
    """
    from .data.synth import generate  # numpy only: works with the runtime install

    counts = generate(out, categories.split(",") if categories else None, size=size, seed=seed, n_train=n_train,
                      n_validation=n_validation, n_test_good=n_test_good, n_test_per_defect=n_test_per_defect)
    click.echo(json.dumps(counts, indent=2))


@cli.command(short_help="Train on good samples, calibrate thresholds, save RUN/model.pt, then test.")
@click.option("--data", "root", type=click.Path(path_type=Path), default=None,
              help="Dataset root.  [required here or as data.root in --config]")
@click.option("--category", default=None,
              help="Category (folder) to train on.  [required for mvtec3d and eyecandies, here or as "
                   "data.category in --config]")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help=FORMAT_HELP)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder.")
@click.option("--no-resume", is_flag=True, help="Start over even if the run folder has a training state.")
@click.option("--test/--no-test", "then_test", default=True, show_default=True,
              help="Evaluate on the test split and write the report after training.")
@_config_options
def fit(root, category, fmt, out, no_resume, then_test, config_file, overrides, backbone_weights) -> None:
    """Train both students, calibrate on the validation split, save RUN/model.pt.

    Then (unless --no-test) evaluate on the test split and write RUN/report.html; a dataset without
    a test split is trained and the evaluation is skipped. After each epoch it prints the time left.
    Run again with the same --out to resume a killed run.

    \b
    Example:
      trd fit --data data/synth --category puck --out runs/puck --set train.epochs=20
    """
    from .data.samples import check_splits  # numpy only: before torch, a wrong --data/--category stops at once

    cfg = _build_config(config_file, overrides, backbone_weights, root=root, category=category, format=fmt)
    no_test_split = check_splits(cfg.data, test=then_test)
    model_path = full_api().fit(cfg, out, resume=not no_resume)
    if model_path is None:  # a non-zero torchrun rank
        return
    click.echo(f"model: {model_path}")
    if no_test_split is not None:
        click.echo(f"evaluation skipped: no test split ({no_test_split} not found); the model is ready. To evaluate "
                   f"it later on labelled samples: trd test --model {model_path} --data ROOT")
    elif then_test:
        result = full_api().evaluate(model_path, out_dir=out, log=_log)
        click.echo(full_api().summary_line(result))
        click.echo(full_api().decision_summary(result))
        click.echo(f"report: {out / 'report.html'}")


def _input_options(f):
    """How new scans' clouds are stored, when it differs from the training data (test, predict)."""
    f = click.option("--flip-z", "flip_z", is_flag=True, default=None,
                     help="Negate z (cameras whose z axis points away from the scene).")(f)
    f = click.option("--xyz-unit", type=click.Choice(list(XYZ_UNITS)), default=None,
                     help="Unit of the XYZ TIFF values, if not the training data's.")(f)
    return f


@cli.command("test", short_help="Evaluate a model on a labelled split: metrics and an HTML report.")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True, help="RUN/model.pt")
@click.option("--data", "root", type=click.Path(path_type=Path), default=None, help="Dataset root (default: as trained).")
@click.option("--split", default="test", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Report folder (default: the model's folder).")
@click.option("--pro", "pro_method", type=click.Choice(["exact", "thresholds", "both"]), default="exact",
              show_default=True,
              help="AU-PRO: the official exact curve (aupro@L), the reference code's 100-threshold curve "
                   "(aupro100@L), or both.")
@click.option("--explain", is_flag=True, help="Also measure modality attribution per sample (3x the inference time).")
@_input_options
@engine_options
def test_cmd(model_path, root, split, out, pro_method, explain, xyz_unit, flip_z, engine, threads, ep,
             precision) -> None:
    """Evaluate a trained model: metrics (JSON, CSV), heatmaps and an HTML report.

    Prints the headline metrics and the decisions at the deployment thresholds (promised and
    realised false-positive rate with its 95 % interval, recall per defect type); writes
    metrics.json, metrics.csv, report.md, report.html and samples/ to --out (default: the model's
    folder).

    \b
    Example:
      trd test --model runs/puck/model.pt --pro thresholds --explain
    """
    check_model_file(model_path, "--model")
    check_folder(root)
    result = full_api().evaluate(model_path, data_root=root, split=split, out_dir=out, pro_method=pro_method,
                             explain=explain, xyz_unit=xyz_unit, flip_z=flip_z, engine=engine, threads=threads,
                             ep=ep, precision=precision, log=_log)
    click.echo(full_api().summary_line(result))
    if "precision_check" in result:
        click.echo(full_api().precision_line(result["precision_check"]))
    click.echo(full_api().decision_summary(result))


@cli.command(short_help="New thresholds for a model from (new) good samples, without retraining.")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True, help="RUN/model.pt")
@click.option("--data", "root", type=click.Path(path_type=Path), default=None,
              help="Dataset root holding the new good samples (default: the model's own).")
@click.option("--category", default=None, help="Category (default: the model's own).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help=FORMAT_HELP)
@click.option("--split", default="validation", show_default=True, help="Split whose good samples are used.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="New model file (default: MODEL.calibrated.pt beside the model).")
@click.option("--target-fpr", type=float, default=None, help="Requested image false-positive rate (default: the model's).")
@click.option("--pixel-fpr", type=float, default=None, help="Requested share of flagged pixels per good image (default: the model's).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (never the input model).")
@click.option("--force", is_flag=True,
              help="Calibrate on the model's own training split or a test split anyway (refused otherwise: the "
                   "promise would not hold).")
@click.option("--store", default=None, metavar="FILE|URL",
              help="Add the scans labelled good in this result store (rescored with the model).")
@click.option("--store-files", default=None, type=click.Path(file_okay=False),
              help="The store's files folder (default: STORE-files beside a SQLite store).")
@click.option("--store-labels", type=click.Choice(["good", "false-alarm"]), default="good", show_default=True,
              help="good: every scan labelled good; false-alarm: only those that had been flagged.")
@click.option("--replace", is_flag=True, help="Choose the thresholds on the new samples alone (a new validation pool) "
                                              "instead of adding them to the model's.")
def calibrate(model_path, root, category, fmt, split, out, target_fpr, pixel_fpr, overwrite, force, store, store_files,
              store_labels, replace) -> None:
    """Add (new) good samples to a trained model's validation pool and re-derive its thresholds.

    Keeps the normalisation statistics (scores stay comparable); prints the thresholds before and
    after with what they promise, and writes a NEW model file atomically.

    \b
    Examples:
      trd calibrate --model runs/puck/model.pt --data line/good_scans --out runs/puck/model.v2.pt
      trd calibrate --model runs/puck/model.pt --store runs/puck/results.db --out runs/puck/model.v2.pt
    """
    check_model_file(model_path, "--model")
    check_folder(root)
    full_api().calibrate(model_path, data_root=root, category=category, fmt=fmt, split=split, out=out,
                     target_fpr=target_fpr, pixel_fpr=pixel_fpr, overwrite=overwrite, force=force, store=store,
                     store_files=store_files, store_labels=store_labels, replace=replace, log=_log)


@cli.command(short_help="Score new scans: decisions, heatmaps, predictions.jsonl and a summary.")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None, help="RUN/model.pt")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=None,
              help="An exported ONNX file (trd export), instead of --model.")
@click.option("--input", "input_dir", type=click.Path(path_type=Path), default=None,
              help="Folder with rgb/ and the model's 3D folder (xyz/, depth/ or normals/), files paired by name.")
@click.option("--rgb", type=click.Path(path_type=Path), default=None, help="One RGB image.")
@click.option("--xyz", type=click.Path(path_type=Path), default=None, help="Its 3D file (XYZ TIFF, depth PNG or normal map).")
@click.option("--camera", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="camera.json of depth PNGs (default: INPUT/camera.json).")
@click.option("--watch", "watch_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Score the pairs a scanner writes into this folder (laid out like --input) until stopped.")
@click.option("--settle", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="--watch: a pair counts once both files are unchanged for this many seconds.")
@click.option("--poll", default=0.5, show_default=True, type=click.FloatRange(min=0.01),
              help="--watch: seconds between looks at the folder.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--overwrite", is_flag=True, help="Replace predictions of another model in --out.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--explain", is_flag=True,
              help="Add modality attribution to each record (needs --model; 3x the inference time).")
@click.option("--shard", default=None, metavar="I/N",
              help="Score only part I of N (a job array's task; each part writes its own --out; merge them with "
                   "trd predict-merge).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Score on a Ray cluster: alone, a local one started here; or a running cluster's address "
                   "(HOST:PORT, auto). Needs pip install 'trd-anomaly[ray]'.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ray workers (default: the cluster's CPUs divided by --threads, which is 1 per worker with --ray).")
@_input_options
@store_options
@engine_options
def predict(model_path, onnx_path, input_dir, rgb, xyz, camera, watch_dir, settle, poll, out, overwrite, batch_size,
            explain, shard, ray_address, workers, xyz_unit, flip_z, engine, threads, ep, precision, store, store_files,
            retain) -> None:
    """Score new samples: scores, decisions, heatmap PNGs and predictions.jsonl.

    Each sample's line is appended as soon as it is scored; running again on the same --out with
    the same model continues where it stopped. Prints a JSON summary (counts, the flagged scans with
    their heatmaps, the failed ones); exit code 1 when some samples could not be scored (they are
    listed), 2 on bad input or settings, 3 when --out cannot be written (busy, read-only, full).

    \b
    Examples:
      trd predict --model runs/puck/model.pt --input line_scans/ --out preds/
      trd predict --onnx puck.onnx --rgb scan.png --xyz scan.tiff --out preds/
      trd predict --onnx puck.onnx --watch /scanner/out --out preds/
      trd predict --onnx puck.onnx --input archive/ --out preds/ --ray 10.0.0.5:6379
      trd predict --onnx puck.onnx --input archive/ --out preds/part-3 --shard 3/8
    """
    from .workflows.predict import check_request, predict as run_predict  # a cached export needs no torch

    check_request(input_dir, rgb, xyz, camera, watch_dir, shard, ray_address)
    if (model_path is None) == (onnx_path is None):
        raise ConfigError("give exactly one of --model (model.pt) or --onnx (an exported file)")
    check_model_file(model_path or onnx_path, "--model" if model_path is not None else "--onnx")

    summary = run_predict(model_path, out, input_dir=input_dir, rgb=rgb, xyz=xyz, onnx_path=onnx_path,
                          batch_size=batch_size, overwrite=overwrite, camera=camera, xyz_unit=xyz_unit,
                          flip_z=flip_z, explain=explain, engine=engine, threads=threads, ep=ep, precision=precision,
                          shard=shard, ray=ray_address, workers=workers, store=store, store_files=store_files,
                          retain=retain, watch_dir=watch_dir, settle=settle, poll=poll, log=_log)
    click.echo(json.dumps(summary, indent=2))
    if summary.get("failed") and watch_dir is None:  # a watch ends on a signal: its failures were reported as they came
        sys.exit(1)


@cli.command(short_help="Synthetic data, fit, test and reports with a small backbone (minutes on a CPU).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--backbone-weights", default=None,
              help="Teacher weights; default: imagenet if torchvision can get them, else random (with a warning).")
@click.option("--variants", default="trd", show_default=True,
              help="Comma-separated model variants to compare, or 'all' (TRD, its ablations and the RD baselines).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one demo setting, e.g. --set score.foreground_only=false (repeatable).")
def demo(out, backbone_weights, variants, overrides) -> None:
    """Synthetic data -> fit -> test -> report, with a small backbone (minutes on a laptop CPU).

    Writes OUT/data, one run folder per category and variant (with report.html) and OUT/summary.md.

    \b
    Example:
      trd demo --out runs/demo --variants trd,rd_rgb,rd_3d
    """
    api = full_api()  # before anything imports torch: one line where it is missing
    from .model.trd import VARIANTS

    chosen = list(VARIANTS) if variants == "all" else [v.strip() for v in variants.split(",")]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:  # before any data is generated or any variant trained
        raise click.BadParameter(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)} or 'all'",
                                 param_hint="--variants")
    api.demo(out, backbone_weights=backbone_weights, variants=chosen, overrides=list(overrides))


@cli.command(short_help="The paper protocol on MVTec 3D-AD: every category, tables beside the paper's.")
@click.option("--data", "root", type=click.Path(path_type=Path), required=True, help="MVTec 3D-AD root.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--categories", default=None, help="Comma-separated subset (default: all 10).")
@click.option("--dry-run", is_flag=True, help="Print the plan and the time and disk estimate only.")
@_config_options
def reproduce(root, out, categories, dry_run, config_file, overrides, backbone_weights) -> None:
    """The paper protocol on MVTec 3D-AD categories; tables beside the published numbers.

    Prints the plan and a time and disk estimate from a short warm-up first, rewrites
    OUT/reproduction.md after each category, and skips finished categories (resuming the one in
    progress) when run again with the same --out.

    \b
    Example:
      trd reproduce --data /data/mvtec3d --out runs/paper --categories bagel,tire
    """
    cfg = _build_config(config_file, overrides, backbone_weights, root=root, format="mvtec3d")
    text = full_api().reproduce(cfg, out, categories.split(",") if categories else None, dry_run=dry_run)
    if not dry_run:
        click.echo(text)


@cli.command("prepare-eyecandies", short_help="Convert raw Eyecandies into the layout --format eyecandies reads.")
@click.option("--raw", type=click.Path(path_type=Path), required=True, help="The Eyecandies download.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def prepare_eyecandies(raw, out) -> None:
    """Convert raw Eyecandies into the layout `--format eyecandies` reads (anomalous masks included).

    \b
    Example:
      trd prepare-eyecandies --raw /data/Eyecandies --out /data/eyecandies-prepared
    """
    from .data.eyecandies import prepare_eyecandies as prepare

    click.echo(json.dumps(prepare(raw, out), indent=2))


for command in (export, monitor, predict_merge, serve, store_group, settings, weights):
    cli.add_command(command)



def main() -> None:
    tally = WarningTally(_log)
    shown = warnings.showwarning
    warnings.showwarning = tally.show
    try:
        cli(standalone_mode=False)
    except TRDError as exc:
        _finish(tally)
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _finish(tally)
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SystemExit:  # a command's own exit code (predict: 1 when some samples failed)
        _finish(tally)
        raise
    else:
        _finish(tally)
    finally:
        warnings.showwarning = shown


def _finish(tally: WarningTally) -> None:
    """The warnings summary of the run: one line per kind that came more than once."""
    for line in tally.summary():
        _log(line)


if __name__ == "__main__":
    main()
