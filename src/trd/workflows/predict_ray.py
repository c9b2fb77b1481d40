"""``trd predict --ray``: the output folder of `trd predict`, scored by the workers of a Ray cluster.

The driver (this process) lists the samples, leaves out those its ledger already holds, and hands
the rest to Ray Data: ``from_items`` -> ``map_batches`` with `trd.runtime.batch_scorer.BatchScorer`
(one model per worker, on a pool of actors) -> ``iter_rows``, streamed. It writes each result as it
arrives exactly as a single-process run does (its pictures, the result store's row, then the
record: `Ledger.write`), so
the folder holds the same files with the same guarantees:

- nothing is lost: a line is appended only after its images are in place;
- nothing is scored twice into the folder: a result whose scan the ledger already holds (Ray can
  deliver a batch's results again after a worker dies) is not written again;
- a worker or a whole node that dies: Ray Data restarts its actor on a live node and runs its
  unfinished batches again (its defaults: actors restart, tasks retry), and the run goes on;
- the driver that dies: its workers stop with it; the same command again skips what is done.

Every node reads the model and the inputs itself, at the paths the driver sees (a shared file
system). Ray is optional: ``pip install 'trd-anomaly[ray]'``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..data.identity import model_sha256
from ..data.samples import Sample
from ..errors import ConfigError, TRDError
from ..runtime.batch_scorer import BatchScorer, sample_row
from ..runtime.records import model_record, record_identity
from ..runtime.scored import Scored
from .engine import LoadedModel
from .predict import Ledger, plan, summary
from .stored import store_result

if TYPE_CHECKING:
    from ..store import Store

Log = Callable[[str], None]
RAY_EXTRA = "pip install 'trd-anomaly[ray]'"


@dataclass(frozen=True)
class RayRun:
    """How to score on Ray: the cluster (``"local"``: start one here; else its address), the
    number of workers (None: the cluster's CPUs / ``threads``), threads per worker, onnxruntime's
    provider and precision on the workers, the batch size and predict's input overrides."""

    address: str
    workers: int | None
    threads: int
    ep: str
    precision: str
    batch_size: int
    xyz_unit: str | None = None
    flip_z: bool | None = None


def require_ray() -> ModuleType:
    """The ``ray`` module with Ray Data, or a one-line TRDError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data ships in the ray[data] extra
    except ImportError:
        raise TRDError(f"--ray needs Ray (with Ray Data), which is not installed here: {RAY_EXTRA}") from None
    return ray


def check_ray(engine: str, explain: bool, workers: int | None) -> None:
    """Refuse, before anything loads, what ``--ray`` cannot do."""
    require_ray()
    if engine == "torch" or explain:
        raise ConfigError(f"--ray scores with onnxruntime on the workers, but {'--explain' if explain else '--engine torch'} "
                          "runs the torch engine: run it without --ray")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: expected an integer >= 1")


def _init(ray: ModuleType, address: str, log: Log) -> None:
    """Connect to the cluster (or start a local one); TRDError naming the address when it fails."""
    try:
        # log_to_driver=False: the workers' output would land on stdout, which holds the summary only;
        # their errors still reach the driver as exceptions.
        ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise TRDError(f"--ray {address}: cannot start or reach the Ray cluster: {str(exc).strip().splitlines()[0]}") from None
    ray.data.DataContext.get_current().enable_progress_bars = False  # predict prints a summary; bars would bury it
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not every step of Ray Data's plan
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
    log(f"predict: Ray cluster with {int(ray.cluster_resources().get('CPU', 0))} CPUs")


def _user_error(exc: BaseException) -> TRDError | None:
    """The toolkit's own error behind a failure Ray reports from a worker (a model file missing on a
    node, ...), if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TRDError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__ or seen.__context__
    return None


def _score_on_ray(ray: ModuleType, todo: list[Sample], targets: list, run: RayRun, scorer: dict[str, Any],
                  ledger: Ledger, store: Store | None, log: Log) -> tuple[list[dict[str, Any]], list[dict[str, str]], int]:
    """Score ``todo`` on the cluster, writing each result into ``ledger`` as it arrives; the records
    written, the samples that failed and the number of workers."""
    _init(ray, run.address, log)
    written, failed = [], []
    try:
        workers = run.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // run.threads))
        rows = [sample_row(i, s, t) for i, (s, t) in enumerate(zip(todo, targets, strict=True))]
        results = ray.data.from_items(rows).map_batches(
            BatchScorer, fn_constructor_kwargs=scorer, batch_size=run.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=run.threads)
        for row in results.iter_rows():
            if row["error"]:
                failed.append({"file": str(todo[int(row["index"])].rgb), "error": str(row["error"])})
                continue
            record = json.loads(row["record"])
            if record_identity(record) in ledger.done:
                continue  # delivered again after a worker died: it is in the folder already
            scored = Scored(int(row["index"]), record, dict(zip(row["names"], row["images"], strict=True)))
            sample = todo[scored.index]
            ledger.write(scored, None if store is None else
                         lambda: store_result(store, record, sample, scored.images, "predict"))
            written.append(record)
    except Exception as exc:
        mine = _user_error(exc)
        if mine is None:
            raise
        raise mine from None
    finally:
        ray.shutdown()
    return written, failed, workers


def predict_on_ray(model: LoadedModel, samples: list[Sample], out_dir: Path, run: RayRun,
                   unpaired: list[tuple[str, str]] = (), log: Log = print, base: Path | None = None,
                   store: Store | None = None) -> dict[str, Any]:
    """Score ``samples`` on Ray into ``out_dir`` (locked and claimed by the caller) and ``store``;
    the summary of `trd.workflows.predict.predict_samples` plus ``workers``."""
    ray = require_ray()
    ledger = Ledger(out_dir, log)
    todo, targets, failed, skipped, given = plan(ledger, samples, unpaired, base, log)
    written: list[dict[str, Any]] = []
    workers = 0
    if todo:
        onnx = Path(model.onnx_path)
        scorer = {"onnx_path": str(onnx), "sha256": model_sha256(onnx, onnx.with_name(onnx.name + ".data"), missing_ok=True),
                  "model": model_record(model.sha256, model.name, "", run.precision), "ep": run.ep,
                  "precision": run.precision, "threads": run.threads, "max_batch": run.batch_size,
                  "xyz_unit": run.xyz_unit, "flip_z": run.flip_z, "all_images": store is not None}
        with contextlib.redirect_stdout(sys.stderr):  # Ray prints some news of its workers on stdout
            written, more, workers = _score_on_ray(ray, todo, targets, run, scorer, ledger, store, log)
        failed += more
    given |= {r["key"] for r in written}
    result = summary(model, ledger, len(written), skipped, failed, given, len(samples) + len(unpaired))
    result["store"] = None if store is None else store.where
    providers = sorted({r["model"]["provider"] for r in written})
    return result | {"provider": ", ".join(providers), "precision": run.precision, "workers": workers}
