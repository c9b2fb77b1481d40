"""The ``trd`` command: a thin layer over `trd.api`. Errors a user can fix print one line, exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import api
from .config import load_config
from .errors import TRDError


def _config_options(f):
    """Options shared by every command that builds a config."""
    f = click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="TOML config file ([data] [model] [train] [score] sections).")(f)
    f = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override one setting, e.g. --set train.epochs=50 (repeatable).")(f)
    f = click.option("--backbone-weights", default=None,
                     help="Teacher weights: imagenet (torchvision download), none (random, tests only) or a file.")(f)
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


@cli.command()
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
    counts = api.synth(out, categories=categories.split(",") if categories else None, size=size, seed=seed,
                       n_train=n_train, n_validation=n_validation, n_test_good=n_test_good,
                       n_test_per_defect=n_test_per_defect)
    click.echo(json.dumps(counts, indent=2))


@cli.command()
@click.option("--data", "root", type=click.Path(path_type=Path), default=None, help="Dataset root.")
@click.option("--category", default=None, help="Category (folder) to train on.")
@click.option("--format", "fmt", type=click.Choice(["mvtec3d", "eyecandies", "folder"]), default=None)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder.")
@click.option("--no-resume", is_flag=True, help="Start over even if the run folder has a training state.")
@click.option("--test/--no-test", "then_test", default=True, show_default=True,
              help="Evaluate on the test split and write the report after training.")
@_config_options
def fit(root, category, fmt, out, no_resume, then_test, config_file, overrides, backbone_weights) -> None:
    """Train both students, calibrate on the validation split, save RUN/model.pt.

    Then (unless --no-test) evaluate on the test split and write RUN/report.html. Run again with
    the same --out to resume a killed run.

    \b
    Example:
      trd fit --data data/synth --category puck --out runs/puck --set train.epochs=20
    """
    cfg = _build_config(config_file, overrides, backbone_weights, root=root, category=category, format=fmt)
    model_path = api.fit(cfg, out, resume=not no_resume)
    if model_path is None:  # a non-zero torchrun rank
        return
    click.echo(f"model: {model_path}")
    if then_test:
        result = api.evaluate(model_path, out_dir=out)
        click.echo(api.summary_line(result))
        click.echo(f"report: {out / 'report.html'}")


@cli.command("test")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True, help="RUN/model.pt")
@click.option("--data", "root", type=click.Path(path_type=Path), default=None, help="Dataset root (default: as trained).")
@click.option("--split", default="test", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Report folder (default: the model's folder).")
@click.option("--pro", "pro_method", type=click.Choice(["exact", "thresholds", "both"]), default="exact",
              show_default=True,
              help="AU-PRO: the official exact curve (aupro@L), the reference code's 100-threshold curve "
                   "(aupro100@L), or both.")
def test_cmd(model_path, root, split, out, pro_method) -> None:
    """Evaluate a trained model: metrics (JSON, CSV), heatmaps and an HTML report.

    Prints the headline metrics; writes metrics.json, metrics.csv, report.md, report.html and
    panels/ to --out (default: the model's folder).

    \b
    Example:
      trd test --model runs/puck/model.pt --pro thresholds
    """
    result = api.evaluate(model_path, data_root=root, split=split, out_dir=out, pro_method=pro_method)
    click.echo(api.summary_line(result))


@cli.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None, help="RUN/model.pt")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=None, help="Use an exported ONNX file.")
@click.option("--input", "input_dir", type=click.Path(path_type=Path), default=None,
              help="Folder with rgb/ and xyz/ subfolders, files paired by name.")
@click.option("--rgb", type=click.Path(path_type=Path), default=None, help="One RGB image.")
@click.option("--xyz", type=click.Path(path_type=Path), default=None, help="Its XYZ TIFF.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
def predict(model_path, onnx_path, input_dir, rgb, xyz, out, batch_size) -> None:
    """Score new samples: scores, decisions, heatmap PNGs and predictions.jsonl.

    Prints a JSON summary; exit code 1 when some samples could not be scored (they are listed),
    2 on an error that stops the run.

    \b
    Examples:
      trd predict --model runs/puck/model.pt --input line_scans/ --out preds/
      trd predict --onnx puck.onnx --rgb scan.png --xyz scan.tiff --out preds/
    """
    summary = api.predict(model_path, out, input_dir=input_dir, rgb=rgb, xyz=xyz, onnx_path=onnx_path,
                          batch_size=batch_size)
    click.echo(json.dumps(summary, indent=2))
    if summary.get("failed"):
        sys.exit(1)


@cli.command()
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
    from .model.trd import VARIANTS

    chosen = list(VARIANTS) if variants == "all" else [v.strip() for v in variants.split(",")]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:  # before any data is generated or any variant trained
        raise click.BadParameter(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)} or 'all'",
                                 param_hint="--variants")
    api.demo(out, backbone_weights=backbone_weights, variants=chosen, overrides=list(overrides))


@cli.command()
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
    text = api.reproduce(cfg, out, categories.split(",") if categories else None, dry_run=dry_run)
    if not dry_run:
        click.echo(text)


@cli.command("prepare-eyecandies")
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


@cli.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True)
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def export(model_path, fmt, out) -> None:
    """Export the detector (two inputs; fused map, per-branch maps, score) for deployment.

    Prints the path written. The file carries its config and thresholds (needs the onnx extra).

    \b
    Example:
      trd export --model runs/puck/model.pt --out puck.onnx
    """
    click.echo(str(api.export(model_path, out, fmt=fmt)))


def main() -> None:
    try:
        cli(standalone_mode=False)
    except TRDError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
