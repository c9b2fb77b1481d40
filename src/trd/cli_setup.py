"""The ``trd`` commands that set a PC up: the settings (``trd settings``, no torch) and the ImageNet
teacher weights of an offline PC (``trd weights``, needs the training install); with the helpers
every command shares (one-line stderr notes, the training-install check, torch-free argument
checks). `trd.cli` registers them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from .errors import DataError, require_torch


def log(line: str) -> None:
    """Progress and notes on stderr, above any progress bar."""
    tqdm.write(line, file=sys.stderr)


def check_folder(root: Path | None) -> None:
    """DataError for a --data folder that does not exist (before any heavy import)."""
    if root is not None and not root.is_dir():
        raise DataError(root, "dataset root folder not found" if not root.exists() else "is a file, expected a folder")


def full_api():  # noqa: ANN202 - the module trd.api
    """The full toolkit (`trd.api`), or a one-line TRDError where torch is not installed."""
    require_torch()
    from . import api

    return api


def engine_options(f):
    """Which inference engine, on which execution provider, with how many threads (test, predict, serve)."""
    f = click.option("--precision", default="fp32", show_default=True, metavar="fp32|fp16|bf16",
                     help="onnxruntime's precision: fp16 (TensorRT, CUDA, CPU, OpenVINO) or bf16 (OpenVINO) change "
                          "the scores; `trd test` reports by how much.")(f)
    f = click.option("--ep", default="auto", show_default=True, metavar="auto|cpu|openvino[:GPU|:NPU]|cuda|tensorrt",
                     help="onnxruntime's execution provider; auto: the first of tensorrt, cuda, openvino, cpu that "
                          "this install has and that starts. The record says which ran.")(f)
    f = click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="Intra-op threads (default: the CPUs this process may use, or TRD_THREADS).")(f)
    f = click.option("--engine", type=click.Choice(["auto", "onnx", "torch"]), default="auto", show_default=True,
                     help="auto: onnxruntime on a CPU when installed (the export is cached beside the model), "
                          "else torch.")(f)
    return f


def monitor_options(prefix: str = ""):  # noqa: ANN202 - a click decorator
    """The drift monitor's window and false-alarm level (``--[monitor-]window``, ``--[monitor-]alpha``;
    docs/MONITOR.md), checked by `trd.runtime.monitor.MonitorSettings`."""

    def add(f):
        f = click.option(f"--{prefix}alpha", "alpha", type=float, default=0.001, show_default=True,
                         help="Drift monitor: false-alarm level of each check per window.")(f)
        return click.option(f"--{prefix}window", "window", type=int, default=100, show_default=True,
                            help="Drift monitor: the last N scans its checks look at.")(f)

    return add


#: --format of fit and calibrate.
FORMAT_HELP = ("Dataset layout: mvtec3d (the default: ROOT/CATEGORY/train/good/...), eyecandies (as "
               "prepare-eyecandies writes it) or folder (one product of your own: ROOT/train/good/{rgb,xyz or "
               "depth}/, test/ optional).")


@click.command(short_help="List every setting with its default, what it accepts and what it means.")
@click.argument("names", nargs=-1)
def settings(names) -> None:
    """List every setting (or those of NAMES: sections or section.key) with its default, what it
    accepts and what it means; give them in a --config TOML file or with --set section.key=value.

    \b
    Examples:
      trd settings
      trd settings train score.target_fpr
    """
    from .settings import render_settings

    click.echo(render_settings(tuple(names)))


@click.group(short_help="ImageNet teacher weights on a PC without internet: list, import, where.")
def weights() -> None:
    """ImageNet teacher weights on a PC without internet.

    The first fit with --backbone-weights imagenet (the default) downloads the teachers' weights
    into torchvision's cache. Offline: `trd weights list` names the file and URL per backbone;
    download it elsewhere, copy it here, `trd weights import FILE`.
    """


@weights.command("list", short_help="Each backbone's file: installed and checked, or its URL.")
def weights_list() -> None:
    """Each backbone's ImageNet file: installed (with its sha256 checked against the published
    digits) or not, and the URL to download for the missing ones."""
    require_torch()
    from .workflows.weights import list_weights, render_weights

    click.echo(render_weights(list_weights()))


@weights.command("import", short_help="Check a copied weights file and put it where torchvision looks.")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--backbone", default=None, help="Which backbone the file is for (default: from its published name).")
@click.option("--sha256", default=None,
              help="The file's sha256 (hex, at least 8 digits) for a file that is not the published one "
                   "(your own weights); without it the file must match the published sha256.")
def weights_import(file, backbone, sha256) -> None:
    """Check FILE's sha256 (against the published digits in its name, or --sha256), load it as the
    backbone's weights, and copy it atomically into torchvision's cache; prints where it went.

    \b
    Example:
      trd weights import /media/usb/wide_resnet50_2-95faca4d.pth
    """
    require_torch()
    from .workflows.weights import import_weights

    click.echo(str(import_weights(file, backbone=backbone, sha256=sha256, log=log)))


@weights.command("where", short_help="The folder torchvision reads teacher weights from.")
def weights_where() -> None:
    """Print torchvision's weights folder ($TORCH_HOME/hub/checkpoints)."""
    require_torch()
    from .model.backbone import weights_folder

    click.echo(str(weights_folder()))
