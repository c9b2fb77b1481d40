"""One measurement per process: ``python workloads.py SPEC_JSON`` prints one ``RESULT {...}`` line.

A fresh process per configuration makes its peak memory (``ru_maxrss``, or the CUDA allocator's
peak) its own. The "ours" rows drive the toolkit itself (`Trainer.fit` with `TeacherCache` and
`PreprocessCache`, `Detector` with its on-device `Scorer`); the "baseline" rows use the same model
classes in the reference code's naive loops. The "checkpoint" phase times the product's train-state
write (`Trainer.save_state`: atomic, fsync'ed), which the training rows leave out.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from trd.config import Config
from trd.data.cache import build_cache
from trd.data.dataset import PairDataset
from trd.data.geometry import preprocess_3d
from trd.data.samples import list_samples
from trd.data.synth import render_sample
from trd.detector import Detector
from trd.model.trd import TRDModel, build_model
from trd.scoring.maps import Scorer
from trd.training.trainer import Trainer
from trd.training.loss import student_loss
from trd.training.device import DistInfo, autocast, seed_all

CATEGORY = "puck"
#: Any finite statistics do: the speed of scoring does not depend on them.
FAKE_STATS = (0.5, 0.1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _median_time(fn: Callable[[], Any], device: torch.device, runs: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _config(spec: dict[str, Any], cache_dir: str) -> Config:
    flags = spec["flags"]
    cfg = Config()
    cfg.data.root, cfg.data.category = spec["data_root"], CATEGORY
    cfg.data.image_size = spec["size"]
    cfg.data.cache_dir = cache_dir if flags.get("pcache") else "none"
    cfg.data.num_workers = flags.get("workers", 0)
    cfg.model.backbone, cfg.model.weights = spec["backbone"], "none"
    t = cfg.train
    t.epochs, t.batch_size, t.device = spec["warm_epochs"] + spec["epochs"], spec["batch"], spec["device"]
    t.precision = "bf16" if flags.get("bf16") else "fp32"
    t.channels_last, t.compile = bool(flags.get("channels_last")), bool(flags.get("compile"))
    t.cache_teacher, t.fused_adam = bool(flags.get("tcache")), bool(flags.get("fused_adam"))
    return cfg


def _dataset(cfg: Config, n: int) -> PairDataset:
    samples = list_samples("mvtec3d", cfg.data.root, CATEGORY, "train")
    if len(samples) < n:
        raise SystemExit(f"need {n} training pairs, {cfg.data.root} has {len(samples)}")
    return PairDataset(samples[:n], cfg.data, build_cache(cfg.data))


def _cudnn(flags: dict[str, Any]) -> None:
    """seed_all() makes cuDNN deterministic (the product's default); the proposal row undoes it."""
    if flags.get("cudnn_benchmark"):
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


# -- training ---------------------------------------------------------------------------------
def train_baseline(cfg: Config, dataset: PairDataset, device: torch.device) -> list[float]:
    """Reference loop: fp32 NCHW, teachers every iteration, preprocessing on every access."""
    model = build_model(cfg.model, cfg.data.image_size).to(device)
    t = cfg.train
    loader = torch.utils.data.DataLoader(dataset, batch_size=t.batch_size, shuffle=True, num_workers=0)
    opts = {n: torch.optim.Adam(s.parameters(), lr=t.lr, betas=tuple(t.betas)) for n, s in model.students.items()}
    model.students.train()
    seconds = []
    for _ in range(t.epochs):
        start = time.perf_counter()
        for batch in loader:
            feats = model.teacher_features(batch["rgb"].to(device), batch["x3d"].to(device))
            targets = model.branch_targets(feats)
            for name, opt in opts.items():
                opt.zero_grad()
                loss = student_loss(model.students[name](*model.student_inputs(name, feats)), targets[name])
                loss.backward()
                opt.step()
                loss.item()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def train_ours(cfg: Config, dataset: PairDataset, device: torch.device, work: Path) -> list[float]:
    """The toolkit's `Trainer.fit`; epoch seconds from its history (checkpoint writes skipped)."""
    trainer = Trainer(cfg, device, DistInfo(), log=lambda _: None)
    trainer.save_state = lambda _path: None  # a multi-GB write is not training throughput
    trainer.fit(dataset, work / "state.pt", progress=False)
    _sync(device)
    return [float(h["seconds"]) for h in trainer.history]


def run_train(spec: dict[str, Any], device: torch.device, work: Path) -> dict[str, Any]:
    cfg = _config(spec, str(work / "preprocess"))
    dataset = _dataset(cfg, spec["n_pairs"])
    seed_all(0)
    _cudnn(spec["flags"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_rss = _rss_mb()
    if spec["impl"] == "baseline":
        seconds = train_baseline(cfg, dataset, device)
    else:
        seconds = train_ours(cfg, dataset, device, work)
    steady = seconds[spec["warm_epochs"]:]
    per_epoch = statistics.median(steady)
    return {
        "epoch_seconds": [round(s, 4) for s in seconds],
        "first_epoch_s": round(seconds[0], 3),
        "train_pairs_per_s": round(spec["n_pairs"] / per_epoch, 4),
        "train_iterations_timed": len(steady) * -(-spec["n_pairs"] // spec["batch"]),
        "train_peak_mb": _peak_mb(device, base_rss),
    }


# -- inference --------------------------------------------------------------------------------
def _host_score(maps: dict[str, torch.Tensor], sigma: float) -> tuple[np.ndarray, float]:
    """Reference scoring of one sample: numpy z-score per branch, sum, scipy blur, max."""
    mean, std = FAKE_STATS
    fused = sum((m.cpu().numpy()[0, 0] - mean) / std for m in maps.values())
    blurred = ndimage.gaussian_filter(fused, sigma=sigma)
    return blurred, float(blurred.max())


def _inputs(cfg: Config, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` preprocessed pairs as host tensors (loading is measured in the data phase)."""
    ds = _dataset(cfg, n)
    items = [ds[i] for i in range(n)]
    return torch.stack([it["rgb"] for it in items]), torch.stack([it["x3d"] for it in items])


def run_infer(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    flags = spec["flags"]
    cfg = _config(spec, "none")
    extra = [b for b in spec.get("infer_batches", []) if b != spec["infer_batch"]]
    rgb, x3d = _inputs(cfg, max([spec["infer_batch"], *extra]))
    if device.type == "cuda":
        rgb, x3d = rgb.pin_memory(), x3d.pin_memory()
    seed_all(0)
    _cudnn(flags)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_rss = _rss_mb()
    model: TRDModel = build_model(cfg.model, cfg.data.image_size).to(device).eval()
    sigma, runs = cfg.score.sigma, spec["runs"]
    dtype = torch.bfloat16 if flags.get("bf16") else torch.float32
    score_times: list[float] = []

    if spec["impl"] == "baseline" or not flags.get("scorer"):
        runner = model
        if spec["impl"] == "ours" and flags.get("channels_last"):
            runner = model.to(memory_format=torch.channels_last)
        # The model sees the whole batch (the baseline too: the same batch size for every row, so a
        # row's gain is not the batching gain the reference would also get); scoring on the host.

        def host_path(r: torch.Tensor, d: torch.Tensor) -> None:
            for cr, cd in [(r, d)]:
                with torch.inference_mode(), autocast(device, dtype):
                    maps = runner.raw_maps(cr.to(device, non_blocking=True), cd.to(device, non_blocking=True))
                start = time.perf_counter()
                for i in range(len(cr)):
                    _host_score({k: v[i:i + 1].float() for k, v in maps.items()}, sigma)
                score_times.append((time.perf_counter() - start) / len(cr))

        fn = host_path
    else:
        scorer = Scorer(list(model.students), sigma=sigma)
        scorer.set_stats({b: FAKE_STATS for b in model.students})
        det = Detector(model, scorer).to(device).eval()
        if flags.get("channels_last"):
            det = det.to(memory_format=torch.channels_last)
        runner = torch.compile(det) if flags.get("compile") else det

        def fn(r: torch.Tensor, d: torch.Tensor) -> None:
            with torch.inference_mode(), autocast(device, dtype):
                runner(r.to(device, non_blocking=True), d.to(device, non_blocking=True))

        with torch.inference_mode():
            maps = model.raw_maps(rgb[:1].to(device), x3d[:1].to(device))
            maps = {k: v.float().expand(len(rgb), -1, -1, -1).contiguous() for k, v in maps.items()}
            st = _median_time(lambda: scorer(maps), device, runs=max(3, runs), warmup=1)
        score_times = [s / len(rgb) for s in st]

    warm = 2 if flags.get("compile") else 1
    n = spec["infer_batch"]
    batch_times = _median_time(lambda: fn(rgb[:n], x3d[:n]), device, runs, warmup=warm)
    lat_times = _median_time(lambda: fn(rgb[:1], x3d[:1]), device, max(runs, 3), warmup=warm)
    by_batch = {n: n / statistics.median(batch_times)}
    for b in extra:  # throughput at other batches (the same warm model; a new shape may recompile)
        by_batch[b] = b / statistics.median(_median_time(lambda: fn(rgb[:b], x3d[:b]), device, runs, warmup=warm))
    return {
        "infer_batch": n,
        "infer_pairs_per_s": round(by_batch[n], 4),
        "infer_pairs_per_s_by_batch": {str(b): round(v, 4) for b, v in sorted(by_batch.items())},
        "latency_ms": round(1000 * statistics.median(lat_times), 2),
        "latency_runs_ms": [round(1000 * s, 2) for s in lat_times],
        "score_ms_per_pair": round(1000 * statistics.median(score_times), 3),
        "infer_peak_mb": _peak_mb(device, base_rss),
    }


# -- checkpoint -------------------------------------------------------------------------------
def run_checkpoint(spec: dict[str, Any], device: torch.device, work: Path) -> dict[str, Any]:
    """Seconds and bytes of the product's train-state write (`Trainer.save_state`: torch.save to a
    temporary file, fsync, rename), after one real training step (so the Adam moments exist), and
    of reading it back (`Trainer.load_state`; the page cache is warm, so this is not a disk read)."""
    cfg = _config(spec, "none")
    seed_all(0)
    trainer = Trainer(cfg, device, DistInfo(), log=lambda _: None)
    size = spec["size"]
    rgb, x3d = (torch.randn(spec["batch"], 3, size, size, device=device) for _ in range(2))
    with torch.no_grad():
        feats = trainer.model.teacher_features(rgb, x3d)
    trainer.step(feats)
    _sync(device)
    path = work / "state.pt"
    writes = []
    for _ in range(spec.get("ckpt_runs", 1)):
        start = time.perf_counter()
        trainer.save_state(path)
        writes.append(time.perf_counter() - start)
    n_bytes = path.stat().st_size
    start = time.perf_counter()
    trainer.load_state(path)
    read_s = time.perf_counter() - start
    path.unlink()
    return {"ckpt_bytes": n_bytes, "ckpt_write_s": round(statistics.median(writes), 3),
            "ckpt_write_runs_s": [round(s, 3) for s in writes], "ckpt_read_s": round(read_s, 3),
            "ckpt_write_mb_per_s": round(n_bytes / 1e6 / statistics.median(writes), 1)}


# -- data loading -----------------------------------------------------------------------------
def run_data(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """ms per pair of `PairDataset[i]`: no cache, cache miss (compute + write), cache hit."""
    out: dict[str, Any] = {}
    for mode in ("none", "miss", "hit"):
        spec_flags = {"pcache": mode != "none"}
        cfg = _config({**spec, "flags": spec_flags}, str(work / "preprocess"))
        ds = _dataset(cfg, spec["n_pairs"])
        start = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        out[f"load_ms_{mode}"] = round(1000 * (time.perf_counter() - start) / len(ds), 2)
    # Real MVTec 3D-AD clouds are ~800x800: what one preprocessing costs at that size.
    _, xyz, _ = render_sample(np.random.default_rng(0), 800, CATEGORY, "good")
    times = _median_time(lambda: preprocess_3d(xyz, size=spec["size"]), torch.device("cpu"), 3)
    out["preprocess_800px_ms"] = round(1000 * statistics.median(times), 1)
    return out


def _peak_mb(device: torch.device, base_rss: float) -> float:
    """CUDA: allocator peak; CPU: growth of the process's peak RSS over its value before the work."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(_rss_mb() - base_rss, 1)


def _cpu_s() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(spec: dict[str, Any]) -> dict[str, Any]:
    warnings.simplefilter("ignore")  # weights='none' warns on every teacher build
    if spec.get("cpus"):  # pinned: a fixed set of cores, as many threads as cores
        os.sched_setaffinity(0, spec["cpus"])
        torch.set_num_threads(len(spec["cpus"]))
    device = torch.device(spec["device"])
    load_before = os.getloadavg()[0]
    cpu_before = _cpu_s()
    with tempfile.TemporaryDirectory(prefix="trd-bench-") as tmp:
        start = time.perf_counter()
        if spec["phase"] == "train":
            result = run_train(spec, device, Path(tmp))
        elif spec["phase"] == "infer":
            result = run_infer(spec, device)
        elif spec["phase"] == "checkpoint":
            result = run_checkpoint(spec, device, Path(tmp))
        else:
            result = run_data(spec, Path(tmp))
        result["wall_s"] = round(time.perf_counter() - start, 2)
        result["cpu_s"] = round(_cpu_s() - cpu_before, 2)  # beside wall_s: oversubscription shows up
    result["rss_peak_mb"] = round(_rss_mb(), 1)
    result["torch_threads"] = torch.get_num_threads()
    result["cpus"] = sorted(os.sched_getaffinity(0))
    result["loadavg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(json.loads(sys.argv[1]))), flush=True)
