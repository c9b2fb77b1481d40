"""Convert the raw Eyecandies download into the layout :func:`trd.data.samples.list_samples` reads.

Raw: ``<raw>/<Category>/{train,val,test_public}/data/<id>_image_4.png, <id>_depth.png,
<id>_normals.png, <id>_mask.png`` (the other lighting images and metadata files are ignored).
Output: ``<out>/<Category>/{train/good, validation/good, test/{good,bad}}/{rgb,depth,normals}/<id>.png``
plus ``test/{good,bad}/gt/<id>.png``. RGB is the fixed-lighting ``image_4`` (docs/METHOD.md §2.8).

DEPARTURE (docs/METHOD_NOTES.md §6): the reference preprocessing writes ground truth only for good test samples, so its
anomalous test samples have no mask (docs/METHOD.md §10.2); here every test sample gets its mask
(all zero for good ones). Numeric ids are zero-padded to 3 digits in every split.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import DataError
from .io import read_mask, staged_dir
from .samples import EYECANDIES_CATEGORIES

#: output split -> raw folder
_RAW_SPLITS: tuple[tuple[str, str], ...] = (("train", "train"), ("validation", "val"), ("test", "test_public"))
#: output folder -> raw file suffix
_INPUTS: tuple[tuple[str, str], ...] = (("rgb", "_image_4.png"), ("depth", "_depth.png"), ("normals", "_normals.png"))
_MASK = "_mask.png"


def prepare_eyecandies(
    raw_root: Path, out_root: Path, categories: list[str] | None = None
) -> dict[str, dict[str, dict[str, int]]]:
    """Copy the needed files of each category; returns ``{category: {split: {"good"|"bad": n}}}``.

    ``categories`` defaults to every known Eyecandies category found under ``raw_root``. A test
    sample is "bad" iff its mask has a non-zero pixel. Any missing per-sample file raises
    DataError (nothing is skipped). Each category is written into a hidden folder first and moved
    into place when complete, replacing an older conversion.
    """
    raw_root, out_root = Path(raw_root), Path(out_root)
    if not raw_root.is_dir():
        raise DataError(raw_root, "raw Eyecandies folder not found")
    if categories is None:
        categories = [c for c in EYECANDIES_CATEGORIES if (raw_root / c).is_dir()]
        if not categories:
            known = ", ".join(EYECANDIES_CATEGORIES)
            raise DataError(raw_root, f"no Eyecandies category folders found (expected some of {known})")
    for cat in categories:
        if not (raw_root / cat).is_dir():
            raise DataError(raw_root / cat, "category folder not found")
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for cat in categories:
        with staged_dir(out_root / cat) as tmp:
            counts[cat] = {split: _convert_split(raw_root / cat / raw / "data", tmp / split, split == "test")
                           for split, raw in _RAW_SPLITS}
    return counts


def _sample_ids(data_dir: Path, suffixes: list[str]) -> list[str]:
    """Every id that has at least one of the needed files; each must then have all of them."""
    if not data_dir.is_dir():
        raise DataError(data_dir, "missing folder (expected the raw layout <Category>/{train,val,test_public}/data/)")
    ids = {p.name[: -len(s)] for p in data_dir.iterdir() for s in suffixes if p.name.endswith(s)}
    if not ids:
        raise DataError(data_dir, f"no samples found (expected <id>{suffixes[0]} files)")
    for sample_id in sorted(ids):
        for suffix in suffixes:
            if not (data_dir / f"{sample_id}{suffix}").is_file():
                raise DataError(data_dir / f"{sample_id}{suffix}",
                                f"missing file of sample {sample_id} (each needs {', '.join(suffixes)})")
    return sorted(ids)


def _out_name(sample_id: str) -> str:
    return f"{int(sample_id):03d}" if sample_id.isdigit() else sample_id


def _convert_split(data_dir: Path, out_dir: Path, is_test: bool) -> dict[str, int]:
    """Copy one raw split; test samples are sorted into good/bad by their mask and keep it as gt."""
    suffixes = [s for _, s in _INPUTS] + ([_MASK] if is_test else [])
    counts: dict[str, int] = {}
    names: dict[str, str] = {}
    for sample_id in _sample_ids(data_dir, suffixes):
        name = _out_name(sample_id)
        if name in names:
            raise DataError(data_dir, f"sample ids {names[name]!r} and {sample_id!r} both map to {name}.png")
        names[name] = sample_id
        mask = data_dir / f"{sample_id}{_MASK}"
        kind = "bad" if is_test and read_mask(mask).any() else "good"
        outputs = list(_INPUTS) + ([("gt", _MASK)] if is_test else [])
        for folder, suffix in outputs:
            target = out_dir / kind / folder / f"{name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_dir / f"{sample_id}{suffix}", target)
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))
