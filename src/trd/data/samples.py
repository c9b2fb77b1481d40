"""Dataset layouts: which files make up each sample of a split, checked before any training.

Three layouts are understood (``fmt``):

``mvtec3d``  MVTec 3D-AD: ``<root>/<category>/{train,validation,test}/<defect>/{rgb/*.png,
             xyz/*.tiff, gt/*.png}``; the synthetic dataset (:mod:`trd.data.synth`) uses it too.
``eyecandies``  the preprocessed Eyecandies layout written by :func:`trd.data.eyecandies.prepare_eyecandies`:
             ``<root>/<Category>/{train/good, validation/good, test/{good,bad}}/{rgb,normals,gt}/<id>.png``;
             the 3D input is the dataset's normal map (``depth/`` is ignored).
``folder``   one product of the user's own data: ``<root>/{train,validation,test}/<defect>/{rgb/*.png,
             xyz/*.tiff or depth/*.png, gt/*.png}``; 16-bit depth PNGs need ``<root>/camera.json``.

Samples are paired by file stem, sorted by defect folder then stem (never shuffled); ``good`` means
label 0 with no mask file, every other defect folder label 1 with a required ``gt/<stem>.png``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..config import FORMATS, DataConfig
from ..errors import ConfigError, DataError
from .readers import folders, kind_of, reader
from .readers.depth_png import Camera

MVTEC3D_CATEGORIES: tuple[str, ...] = (
    "bagel", "cable_gland", "carrot", "cookie", "dowel", "foam", "peach", "potato", "rope", "tire",
)
EYECANDIES_CATEGORIES: tuple[str, ...] = (
    "CandyCane", "ChocolateCookie", "ChocolatePraline", "Confetto", "GummyBear", "HazelnutTruffle",
    "LicoriceSandwich", "Lollipop", "Marshmallow", "PeppermintCandy",
)
SPLITS: tuple[str, ...] = ("train", "validation", "test")

#: Share of the sorted train samples held out as validation when a folder dataset has none.
IMPLICIT_VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class Sample:
    """One RGB + 3D pair. ``mask`` is None for good samples (all-zero ground truth)."""

    rgb: Path
    xyz: Path
    mask: Path | None
    label: int  # 0 good, 1 defective
    defect: str  # "good" or the defect folder name
    category: str
    split: str  # train | validation | test
    xyz_kind: str  # the kind of 3D file (`trd.data.readers`): xyz_tiff | depth_png | normals_png
    camera: Path | None = None  # camera.json of a depth PNG (intrinsics and depth scale)


def _check_format(fmt: str, root: Path) -> None:
    if fmt not in FORMATS:
        raise DataError(root, f"unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")
    if not root.is_dir():
        raise DataError(root, "dataset root folder not found")


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Map stem -> file for the files with one of ``suffixes`` (case-insensitive); hidden files ignored."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes:
            if p.stem in found:
                raise DataError(p, f"two files named {p.stem} ({found[p.stem].name} and {p.name})")
            found[p.stem] = p
    return found


def list_categories(fmt: str, root: str | Path) -> list[str]:
    """Categories under ``root``, sorted: folders holding a ``train/`` or ``test/`` folder.

    For ``folder`` the root is itself the one category, named after the folder.
    """
    root = Path(root)
    _check_format(fmt, root)
    if fmt == "folder":
        return [root.name]
    cats = [p.name for p in _subdirs(root) if (p / "train").is_dir() or (p / "test").is_dir()]
    if not cats:
        raise DataError(root, "no category folders found (expected <root>/<category>/train/)")
    return cats


def list_samples(fmt: str, root: str | Path, category: str, split: str, camera_optional: bool = False) -> list[Sample]:
    """List and check the samples of one split of one category.

    ``fmt`` is one of :data:`FORMATS`; ``split`` one of train / validation / test. For ``folder``
    the category is ``root.name`` (``category`` may be "" or that name). A folder dataset without
    ``validation/`` gets an implicit one: the last 10% (at least 1) of its train samples in sorted
    order, which are then left out of train; this is deterministic and never touches test.
    Raises DataError for a missing folder, an empty split, an RGB image without its 3D file (or
    the reverse), a defect sample without its mask, or a depth PNG without ``camera.json`` (unless
    ``camera_optional``: the model keeps the camera it was trained with).
    """
    root = Path(root)
    _check_format(fmt, root)
    if split not in SPLITS:
        raise DataError(root, f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if fmt == "folder":
        if category not in ("", root.name):
            raise DataError(root, f"category {category!r} does not match the folder name {root.name!r}")
        return _folder_split(root, split, camera_optional)
    if not category:
        raise DataError(root, f"no category given; categories here: {_known(fmt, root)}")
    cat_dir = root / category
    if not cat_dir.is_dir():
        raise DataError(
            cat_dir, f"category folder not found (expected <root>/{category}/{{train,validation,test}}; "
            f"categories here: {_known(fmt, root)})"
        )
    return _scan_split(cat_dir / split, category, split, folders(fmt))


def split_samples(cfg: DataConfig, split: str, camera_optional: bool = False) -> list[Sample]:
    """The checked samples of ``split`` for a run's data settings (``root``, ``format``, ``category``);
    ``camera_optional``: a depth-PNG dataset may come without camera.json (the model keeps one)."""
    if not cfg.root:
        raise ConfigError("no dataset given: pass --data ROOT (or data.root in the config)")
    if cfg.format != "folder" and not cfg.category:
        raise ConfigError("no category given: pass --category NAME (or data.category in the config)")
    return list_samples(cfg.format, Path(cfg.root), cfg.category, split, camera_optional)


def split_folder(cfg: DataConfig, split: str) -> Path:
    """Where ``split`` lives for a run's data settings (it may be missing: ``test/`` is optional)."""
    root = Path(cfg.root)
    return root / split if cfg.format == "folder" else root / cfg.category / split


def check_splits(cfg: DataConfig, test: bool = True) -> Path | None:
    """List and check the splits ``trd fit`` reads (train, validation and, with ``test``, the test
    split it evaluates) before any training: files only, no image is decoded. Returns the test
    split's folder when it does not exist (``test/`` is optional: the evaluation is skipped), else None."""
    for split in ("train", "validation"):
        split_samples(cfg, split)
    if not test:
        return None
    folder = split_folder(cfg, "test")
    if not folder.is_dir():
        return folder
    split_samples(cfg, "test")
    return None


def _known(fmt: str, root: Path) -> str:
    try:
        return ", ".join(list_categories(fmt, root))
    except DataError:
        return "none"


def _check_camera(samples: list[Sample], camera: Path, optional: bool) -> None:
    """Read the camera file of depth images now, to fail with its name before any sample is read;
    an ``optional`` one may be absent (the model's own camera is used then)."""
    if any(reader(s.xyz_kind).camera for s in samples) and not (optional and not camera.exists()):
        Camera.from_json(camera)


def _folder_split(root: Path, split: str, camera_optional: bool = False) -> list[Sample]:
    """Samples of a ``folder`` dataset, carving validation out of train when it is absent."""
    if split == "test" or (root / "validation").is_dir():
        samples = _scan_split(root / split, root.name, split, folders("folder"))
    else:
        train = _scan_split(root / "train", root.name, "train", folders("folder"))
        if len(train) < 2:
            raise DataError(root / "train", "need at least 2 train samples to hold some out as validation "
                            "(or add a validation/ folder)")
        n_val = max(1, int(len(train) * IMPLICIT_VALIDATION_FRACTION))
        if split == "train":
            samples = train[:-n_val]
        else:
            samples = [dataclasses.replace(s, split="validation") for s in train[-n_val:]]
    _check_camera(samples, root / "camera.json", camera_optional)
    return samples


def _scan_split(split_dir: Path, category: str, split: str, sources: dict[str, dict[str, str]]) -> list[Sample]:
    """The samples of one split folder; ``sources``: the format's 3D folders (`trd.data.readers.folders`)."""
    expected = f"<defect>/rgb/*.png with matching {' or '.join(f'{k}/*{next(iter(v))}' for k, v in sources.items())}"
    if not split_dir.is_dir():
        raise DataError(split_dir, f"split folder not found (expected {expected})")
    samples: list[Sample] = []
    for defect_dir in _subdirs(split_dir):
        if split != "test" and defect_dir.name != "good":
            raise DataError(defect_dir, f"the {split} split may only contain good/ (training is on normal samples)")
        samples += _scan_defect(defect_dir, category, split, sources)
    if not samples:
        raise DataError(split_dir, f"empty split: no samples found (expected {expected})")
    return samples


def _scan_defect(defect_dir: Path, category: str, split: str, sources: dict[str, dict[str, str]]) -> list[Sample]:
    """Pair ``rgb/<stem>.png`` with the 3D file of the same stem in one defect folder."""
    rgb_dir = defect_dir / "rgb"
    if not rgb_dir.is_dir():
        raise DataError(defect_dir, "missing rgb/ folder")
    present = [name for name in sources if (defect_dir / name).is_dir()]
    if not present:
        raise DataError(defect_dir, f"missing 3D folder: expected {' or '.join(f'{n}/' for n in sources)}")
    if len(present) > 1:
        raise DataError(defect_dir, f"both {' and '.join(f'{n}/' for n in present)} present; keep only one")
    kinds = sources[present[0]]
    suffixes = tuple(kinds)
    d3_dir = defect_dir / present[0]
    rgbs, clouds = _files(rgb_dir, (".png",)), _files(d3_dir, suffixes)
    lonely_rgb, lonely_3d = sorted(rgbs.keys() - clouds.keys()), sorted(clouds.keys() - rgbs.keys())
    if lonely_rgb:
        stem = lonely_rgb[0]
        raise DataError(rgbs[stem], f"RGB image without its 3D file (expected {d3_dir / stem}{suffixes[0]}); "
                        f"{len(lonely_rgb)} such image(s) in {rgb_dir}")
    if lonely_3d:
        stem = lonely_3d[0]
        raise DataError(clouds[stem], f"3D file without its RGB image (expected {rgb_dir / stem}.png); "
                        f"{len(lonely_3d)} such file(s) in {d3_dir}")
    label = 0 if defect_dir.name == "good" else 1
    masks = _files(defect_dir / "gt", (".png",)) if label and (defect_dir / "gt").is_dir() else {}
    camera = defect_dir.parents[1] / "camera.json"
    samples = []
    for stem in sorted(rgbs):
        mask = None
        if label:
            mask = masks.get(stem)
            if mask is None:
                raise DataError(defect_dir / "gt" / f"{stem}.png", f"missing mask for defect sample {rgbs[stem].name}")
        kind = kinds[clouds[stem].suffix.lower()]
        samples.append(Sample(rgbs[stem], clouds[stem], mask, label, defect_dir.name, category, split, kind,
                              camera if reader(kind).camera else None))
    return samples


#: Image files accepted as RGB inputs of `trd predict`.
RGB_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _by_stem(folder: Path, suffixes: tuple[str, ...], what: str) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Files of ``folder`` by stem (suffixes case-insensitive), and (file, problem) for a second file
    with the same stem. Hidden files and folders are ignored, as when listing a dataset."""
    found: dict[str, Path] = {}
    problems: list[tuple[str, str]] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in suffixes or not p.is_file():
            continue
        if p.stem in found:
            problems.append((str(p), f"two {what} named {p.stem}: {found[p.stem].name} is scored, this one is not"))
        else:
            found[p.stem] = p
    return found, problems


def check_input_paths(input_dir: Path | None = None, rgb: Path | None = None, xyz: Path | None = None,
                      camera: Path | None = None) -> None:
    """DataError for a given input path that does not exist (cheap: `trd predict` checks it before
    it loads a model, the CLI before its heavy imports)."""
    for given in (input_dir, rgb, xyz, camera):
        if given is not None and not given.exists():
            raise DataError(given, "folder not found" if given is input_dir else "file not found")
    if input_dir is not None and not input_dir.is_dir():
        raise DataError(input_dir, "is a file; --input expects a folder with rgb/ and the model's 3D folder")


def unlabelled_samples(cfg: DataConfig, input_dir: Path | None = None, rgb: Path | None = None,
                       xyz: Path | None = None, camera: Path | None = None,
                       camera_optional: bool = False) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Samples to score without labels, in every form training accepts for the model's ``cfg``.

    Either ``input_dir`` with ``rgb/`` and one 3D folder of the model's layout (``xyz/`` TIFFs,
    ``depth/`` 16-bit PNGs with a ``camera.json``, or ``normals/`` PNGs for Eyecandies models),
    files paired by name; or one ``rgb`` image and its 3D file ``xyz`` (TIFF, depth PNG or normal
    map, by the model's layout and the suffix). ``camera``: the depth camera's JSON (default:
    ``<input>/camera.json``, or next to the depth file); ``camera_optional``: it may be absent (the
    model keeps the camera it was trained with). Returns the samples and (file, problem)
    for files that cannot be paired; raises DataError when there is nothing to score.
    """
    sources = folders(cfg.format)
    if (input_dir is None) == (rgb is None):
        raise DataError(input_dir or rgb or Path("."), "give either --input FOLDER or --rgb FILE --xyz FILE")
    if rgb is not None:
        if xyz is None:
            raise DataError(rgb, "--rgb needs --xyz (the matching 3D file)")
        for path in (rgb, xyz):
            if not path.is_file():
                raise DataError(path, "file not found")
        kind = kind_of(xyz, cfg.format)
        cam = camera or next((c for c in (xyz.parent / "camera.json", xyz.parent.parent / "camera.json")
                              if c.is_file()), xyz.parent / "camera.json")
        return [_unlabelled(rgb, xyz, kind, cfg, cam)], []
    present = [name for name in sources if (input_dir / name).is_dir()]
    if not (input_dir / "rgb").is_dir() or len(present) != 1:
        wanted = " or ".join(f"{n}/" for n in sources)
        raise DataError(input_dir, f"--input expects a folder with rgb/ and exactly one of {wanted} for this model")
    kinds = sources[present[0]]
    rgbs, problems = _by_stem(input_dir / "rgb", RGB_SUFFIXES, "RGB images")
    clouds, more = _by_stem(input_dir / present[0], tuple(kinds), "3D files")
    problems += more
    problems += [(str(rgbs[s]), f"no 3D file with this name in {present[0]}/") for s in sorted(set(rgbs) - set(clouds))]
    problems += [(str(clouds[s]), "no RGB image with this name in rgb/") for s in sorted(set(clouds) - set(rgbs))]
    cam = camera or input_dir / "camera.json"
    samples = [_unlabelled(rgbs[s], clouds[s], kinds[clouds[s].suffix.lower()], cfg, cam)
               for s in sorted(set(rgbs) & set(clouds))]
    if not samples:
        raise DataError(input_dir, f"no RGB/3D pairs found (files are paired by name, e.g. rgb/001.png + "
                                   f"{present[0]}/001{next(iter(kinds))})")
    _check_camera(samples, cam, camera_optional)
    return samples, problems


def _unlabelled(rgb: Path, xyz: Path, kind: str, cfg: DataConfig, camera: Path) -> Sample:
    # The training samples' category: per-category settings (the Sobel preset) apply to new scans too.
    category = cfg.category or (Path(cfg.root).name if cfg.format == "folder" and cfg.root else "")
    return Sample(rgb=rgb, xyz=xyz, mask=None, label=0, defect="unknown", category=category, split="predict",
                  xyz_kind=kind, camera=camera if reader(kind).camera else None)
