"""Every setting with its default, what it accepts and what it means (``trd settings``).

The names and defaults come from the dataclasses of `trd.config`, what a setting accepts from the
rules `trd.config.validate_config` checks (`trd.config.RULES`), and what it means from `MEANINGS`
here; a test checks that `MEANINGS` has exactly one entry per setting, so the listing cannot drift
from the code.
"""

from __future__ import annotations

import textwrap

from .config import PAPER_EPOCHS, RULES, Config, setting_names

#: What each setting means, in a sentence (the units and the paper's value where it matters).
MEANINGS: dict[str, str] = {
    "data.root": "Dataset root folder (--data).",
    "data.format": "Dataset layout (--format): mvtec3d, eyecandies (prepared), or folder (your own "
                   "ROOT/{train,validation,test}/<defect>/{rgb,xyz|depth}/).",
    "data.category": "Category folder to train on (--category); not used by the folder layout.",
    "data.image_size": "Side in pixels that RGB and 3D images are resized to (the paper: 256).",
    "data.modality_3d": "3D input image: surface normals (the paper) or depth.",
    "data.sobel_k": "Sobel aperture of the surface normals (one value for every category).",
    "data.sobel_preset": "'trd-per-class': the reference code's per-category apertures instead of sobel_k.",
    "data.plane": "Background plane removal: corners (the reference), ransac (robust) or none.",
    "data.plane_threshold": "Distance to the background plane below which a point is background, in metres.",
    "data.degenerate_scans": "A scan with most 3D points missing or no object in its 3D input: refuse it, or score it "
                             "with a warning (warn).",
    "data.xyz_unit": "Unit of the point cloud values (m, cm, mm, um); clouds are converted to metres.",
    "data.flip_z": "Negate z, for cameras whose z axis points away from the scene.",
    "data.max_image_pixels": "Larger images and clouds are refused from their header, before decoding.",
    "data.cache_dir": "Preprocessing cache folder ('' = $TRD_CACHE or ~/.cache/trd/preprocess; 'none' = off).",
    "data.num_workers": "DataLoader worker processes that read and preprocess samples (0 = in the main process).",
    "model.backbone": "Frozen ImageNet teacher: wide_resnet50_2 (the paper), resnet50, resnet34 or resnet18.",
    "model.weights": "Teacher weights: imagenet (torchvision's file; 'trd weights' for offline PCs), none "
                     "(random, tests only) or a state-dict file (--backbone-weights).",
    "model.variant": "trd, its ablations (trd_no_filter, trd_no_amplifier) or a baseline (rd_rgb, rd_3d, "
                     "rd_fused_teacher).",
    "model.fuse_stopgrad": "Stop gradients at the fusion (the pre-2025-05 reference variant).",
    "model.decoder_blocks": "Residual blocks of the students' three decoder stages.",
    "model.bottleneck_blocks": "Residual blocks of the students' bottleneck.",
    "train.epochs": "Training epochs (default by data.format when not set).",
    "train.batch_size": "Pairs per optimisation step (the global batch, split over torchrun processes).",
    "train.lr": "Adam learning rate.",
    "train.betas": "Adam betas.",
    "train.gamma": "Learning-rate decay per epoch (ExponentialLR).",
    "train.seed": "Seed of the weight initialisation and the shuffle (one seed and thread count: the same "
                  "weights on CPU).",
    "train.device": "auto (the first CUDA GPU, else CPU), cpu, cuda or cuda:N.",
    "train.precision": "fp32 (the paper), bf16 (opt-in speed, a departure) or auto (bf16 where the GPU supports it).",
    "train.channels_last": "channels_last memory format (speed on some GPUs).",
    "train.compile": "torch.compile the students (speed on some GPUs, minutes of start-up).",
    "train.fused_adam": "torch's fused Adam kernel (same rule as the reference's Adam, faster).",
    "train.cache_teacher": "Compute the frozen teachers' features once and reuse them every epoch.",
    "train.teacher_cache_gb": "Memory the cached teacher features may take on the device, in GiB.",
    "train.checkpoint_every": "Write the train state (RUN/state.pt) at most every N epochs.",
    "train.checkpoint_minutes": "... and only once this many minutes passed since the last write (always after "
                                "the last epoch).",
    "train.keep_state": "Keep RUN/state.pt once model.pt is written (it is removed by default).",
    "score.sigma": "Gaussian smoothing of the fused anomaly map, in pixels.",
    "score.target_fpr": "Image false-positive rate the image threshold promises on good samples (validation split).",
    "score.pixel_fpr": "Share of a good image's pixels allowed above the pixel threshold (validation split).",
    "score.aupro_limits": "False-positive limits of the AU-PRO metrics (aupro@L).",
    "score.foreground_only": "Score only the object (the 3D foreground grown by foreground_margin), an opt-in departure.",
    "score.foreground_margin": "Margin in pixels around the 3D foreground when foreground_only is on.",
    "score.stats_share": "Share of the validation samples whose maps give the normalisation statistics; the others "
                         "choose the thresholds (1: all give both, the reference's way; the promise is then approximate).",
    "score.min_area_mm2": "Reject rule: a flagged region counts as a defect only from this area in mm^2 (0: no rule).",
    "score.min_depth_mm": "Reject rule: a flagged region counts as a defect only from this depth or height in mm "
                          "(0: no rule).",
}


def _default(name: str, value: object) -> str:
    if name == "train.epochs":  # follows data.format unless set (trd.config.PAPER_EPOCHS)
        return " / ".join(f"{n} ({fmt})" for fmt, n in PAPER_EPOCHS.items())
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if value == "" else str(value)


def settings_rows() -> list[tuple[str, str, str, str]]:
    """(``section.key``, default, what it accepts, what it means) for every setting, in config order."""
    defaults = Config()
    rows = []
    for name in setting_names():
        section, key = name.split(".")
        rows.append((name, _default(name, getattr(getattr(defaults, section), key)), RULES[name][1], MEANINGS[name]))
    return rows


def render_settings(only: tuple[str, ...] = (), width: int = 100) -> str:
    """The listing ``trd settings`` prints: one block per setting, grouped by section; ``only``:
    the settings whose name starts with one of these (a section or a whole name)."""
    out = ["Settings: give them in a TOML file (--config, [section] tables) or as --set section.key=value;",
           "the resolved values of a run are saved as RUN/config.toml.", ""]
    section = ""
    for name, default, accepts, meaning in settings_rows():
        if only and not any(name == o or name.startswith(o.rstrip(".") + ".") for o in only):
            continue
        if name.split(".")[0] != section:
            section = name.split(".")[0]
            out += [f"[{section}]"]
        out.append(f"  {name} = {default}")
        out += textwrap.wrap(f"{meaning} Accepts {accepts}.", width, initial_indent="      ",
                             subsequent_indent="      ")
    return "\n".join(out)

