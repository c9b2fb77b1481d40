"""`trd calibrate --store`: the scans an operator labelled good in the result store are rescored with
the model and ADDED to its validation pool, each scan once; scans without files are said to be left
out; a label that is taken back no longer counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trd import api
from trd.detector import load_detector
from trd.errors import TRDError
from trd.scoring.threshold import order_statistic_threshold
from trd.store import open_store, set_label, undo_label

pytest.importorskip("onnx")


def test_scans_labelled_good_in_the_store_join_the_validation_pool(exported, synth_root: Path, tmp_path: Path) -> None:
    model = exported[0]
    store_path = str(tmp_path / "results.db")
    inputs = synth_root / "puck" / "test" / "good"
    api.predict(model, tmp_path / "p", input_dir=inputs, store=store_path, log=lambda _: None)
    store = open_store(store_path, log=lambda _: None)
    first, second = store.query(oldest_first=True)
    with pytest.raises(TRDError, match="no good samples in scans labelled good in"):
        api.calibrate(model, store=store_path, out=tmp_path / "none.pt", log=lambda _: None)
    set_label(store, first.id, "good", "ann")
    set_label(store, second.id, "good", "ann")
    undo_label(store, second.id, "ann")  # taken back: not good any more
    lines: list[str] = []
    out = api.calibrate(model, store=store_path, out=tmp_path / "new.pt", target_fpr=0.3, log=lines.append)
    _, _, old, old_extra = load_detector(model)
    _, _, new, extra = load_detector(out)
    pool = [*old_extra["validation_scores"], first.score]  # the stored score is this model's: rescoring agrees
    assert extra["validation_scores"] == pytest.approx(pool, rel=1e-4, abs=1e-4)
    assert extra["validation_keys"] == [*old_extra["validation_keys"], first.key]
    assert new.n_validation == len(pool) and new.image == pytest.approx(order_statistic_threshold(np.array(pool), 0.3)[0],
                                                                 rel=1e-4, abs=1e-4)
    assert new.source.endswith(f"+ 1 of scans labelled good in {store.where}")
    assert any(line.startswith("calibrate: before: ") and f"(n = {len(pool) - 1} validation samples" in line
               for line in lines), lines
    assert any(f"(n = {len(pool)} calibration samples" in line for line in lines)
    lines.clear()
    again = api.calibrate(out, store=store_path, out=tmp_path / "again.pt", log=lines.append)
    assert load_detector(again)[2].n_validation == len(pool)  # the same scan is not added twice
    assert any("1 of the 1 samples of scans labelled good" in line and "each scan counts once" in line
               for line in lines)
    only_flagged = tmp_path / "false-alarms.pt"  # only scans the model had flagged, and labelled good
    if first.anomalous:
        api.calibrate(model, store=store_path, store_labels="false-alarm", out=only_flagged, log=lambda _: None)
        assert load_detector(only_flagged)[2].n_validation == len(pool)
    else:
        with pytest.raises(TRDError, match="no good samples in false alarms in"):
            api.calibrate(model, store=store_path, store_labels="false-alarm", out=only_flagged, log=lambda _: None)
