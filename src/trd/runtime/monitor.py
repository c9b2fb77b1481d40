"""The drift and input-health monitor: five checks over a rolling window of scored scans (torch-free).

A line drifts (new lighting, a re-mounted scanner, a dirty lens) long before false alarms pile up.
`Monitor` takes the records (`trd.runtime.records`) in the order they were scored, keeps the last
``window`` of them, and after each one runs these checks on the window, each at the false-alarm
level ``alpha`` (docs/MONITOR.md):

``flag_rate``
    Flagged scans against the threshold's promise k/(n+1), one-sided. The count is tested against
    its exact distribution for scans exchangeable with the n validation samples: binomial given
    the threshold's real rate, which is itself Beta(k, n + 1 - k) distributed because the threshold
    was drawn from n scores, so beta-binomial(m, k, n + 1 - k). A plain binomial test at the
    promised rate would raise false alarms far more often than ``alpha`` for any n a line has.
``p_values``
    The p-values of the scans decided good (p > k/(n+1)): too many in the lowest ``low_share`` of
    their range, one-sided. Such scans have ranks uniform on the n + 1 - k good ranks; the share of
    the lowest j ranks is Beta(j, n + 1 - k - j) distributed given the validation set and
    independent of the flag rate, so the count is beta-binomial too. Catches scores creeping up
    before they cross the threshold.
``brightness``, ``missing_3d``, ``z_median_m``
    The window's mean of each `trd.data.inputs.ScanHealth` value against the training scans'
    (`trd.data.inputs.Moments`), Welch's two-sample t-test from the summaries, two-sided. Each
    standard deviation is taken as at least :data:`STD_FLOOR` (a sensor that never misses a point
    in training must not raise an alarm for one missing pixel).

The score checks are exact (for continuous scores) whatever the model and data; the health checks
are approximate (t-tests on values that are not normal), and their level was measured
(docs/MONITOR.md). The window restarts when the model changes (another ``model.sha256``): its
threshold, validation scores and training spread are the reference of every check.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.stats import betabinom, ttest_ind_from_stats

from ..data.inputs import HEALTH_KEYS, Moments
from ..errors import ConfigError

#: Check names and how the messages call them, in the order they run.
CHECKS = {"flag_rate": "flag rate", "p_values": "p-values of scans decided good", "brightness": "RGB brightness",
          "missing_3d": "missing 3D points", "z_median_m": "median distance"}
#: Smallest standard deviation each health value is taken to have (grey levels, share, metres).
STD_FLOOR = {"brightness": 0.5, "missing_3d": 0.002, "z_median_m": 1e-4}


@dataclass(frozen=True)
class MonitorSettings:
    """``window``: scans the checks look at; ``alpha``: false-alarm level of each check per window;
    ``low_share``: the share of the good p-value range that counts as small; ``min_health_scans``:
    scans with health values the health checks wait for (at most the window)."""

    window: int = 100
    alpha: float = 0.001
    low_share: float = 0.2
    min_health_scans: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 2:
            raise ConfigError(f"monitor window must be an integer >= 2 scans, got {self.window!r}")
        if not 0.0 < self.alpha < 0.5:
            raise ConfigError(f"monitor alpha (false-alarm level per check and window) must be in (0, 0.5), got {self.alpha!r}")
        if not 0.0 < self.low_share < 1.0:
            raise ConfigError(f"monitor low_share must be in (0, 1), got {self.low_share!r}")
        if not isinstance(self.min_health_scans, int) or self.min_health_scans < 2:
            raise ConfigError(f"monitor min_health_scans must be an integer >= 2, got {self.min_health_scans!r}")


@dataclass(frozen=True)
class Check:
    """One check's result: ``state`` "ok", "alarm", "waiting" (too few scans yet) or "off" (the
    model or records lack what it needs; ``reason`` says what); ``p``: the test's p-value."""

    name: str
    state: str
    p: float | None
    reason: str

    @property
    def alarm(self) -> bool:
        return self.state == "alarm"


@dataclass(frozen=True)
class Status:
    """The checks on the current window: ``scans`` in it, ``seen`` in total, of model ``model``."""

    scans: int
    seen: int
    model: str | None
    checks: tuple[Check, ...]

    @property
    def alarm(self) -> bool:
        return any(c.alarm for c in self.checks)

    def reasons(self) -> list[str]:
        """The reasons of the checks in alarm, one line each."""
        return [c.reason for c in self.checks if c.alarm]

    def to_dict(self) -> dict[str, Any]:
        return {"alarm": self.alarm, "scans": self.scans, "seen": self.seen, "model": self.model,
                "checks": [asdict(c) for c in self.checks]}


@dataclass(frozen=True)
class _Scan:
    anomalous: bool
    p_value: float | None
    health: Mapping[str, float | None]


@dataclass(frozen=True)
class _Basis:
    """The reference of the checks, from a model's record: threshold rank k of n, training spread."""

    k: int | None
    n: int | None
    spread: Mapping[str, Moments]

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> _Basis:
        threshold = record.get("threshold") or {}
        n, rate = threshold.get("validation_samples"), threshold.get("guaranteed_fpr")
        k = None if n is None or rate is None else int(round(rate * (n + 1)))
        if k is not None and not 1 <= k <= n:
            raise ValueError(f"threshold of rank {k} of {n} validation samples")
        training = (record.get("input_health") or {}).get("training") or {}
        spread = {key: Moments.from_dict(value) for key, value in training.items() if key in HEALTH_KEYS}
        return cls(k, None if k is None else int(n), spread)


def p_text(p: float) -> str:
    """A p-value in a message: ``0.03``, ``1e-5``, ``< 1e-12``."""
    if p >= 1e-3:
        return f"{p:.2g}"
    if p < 1e-12:
        return "< 1e-12"
    mantissa, exponent = f"{p:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _pct(rate: float) -> str:
    return f"{100.0 * rate:.3g} %"


@lru_cache(maxsize=4096)
def beta_binomial_tail(x: int, m: int, a: int, b: int) -> float:
    """P(X >= x) for X ~ beta-binomial(m, a, b) (cached: windows repeat the same counts)."""
    return 1.0 if x <= 0 else float(betabinom.sf(x - 1, m, a, b))


def flag_rate_check(flagged: int, scans: int, k: int | None, n: int | None, alpha: float) -> Check:
    """Flagged of ``scans`` against the promise k/(n+1) of a threshold at rank k of n validation scores."""
    name = "flag_rate"
    if k is None or n is None:
        return Check(name, "off", None, "flag rate: the threshold's guarantee is unknown (chosen by an older trd); "
                                        "run `trd calibrate` to give it one")
    p = beta_binomial_tail(flagged, scans, k, n + 1 - k)
    reason = (f"flag rate {flagged} of {scans} ({_pct(flagged / scans)}) against a promised <= {_pct(k / (n + 1))}: "
              f"p = {p_text(p)}")
    return Check(name, "alarm" if p < alpha else "ok", p, reason)


def p_values_check(p_values: list[float] | None, k: int | None, n: int | None, low_share: float,
                   alpha: float) -> Check:
    """The p-values of scans decided good: too many among the lowest ``low_share`` of their range?
    ``p_values`` None: the records carry none."""
    name = "p_values"
    if p_values is None:
        return Check(name, "off", None, f"{CHECKS[name]}: the records carry no p-values (the model stores no "
                                        "validation scores: written by an older trd; run `trd calibrate`)")
    if k is None or n is None:
        return Check(name, "off", None, f"{CHECKS[name]}: the threshold's rank is unknown (chosen by an older trd)")
    good_ranks = n + 1 - k
    if good_ranks < 2:
        return Check(name, "off", None, f"{CHECKS[name]}: {n} validation scores leave no range to test")
    if not p_values:
        return Check(name, "waiting", None, f"{CHECKS[name]}: no scan decided good yet")
    j = min(max(round(low_share * good_ranks), 1), good_ranks - 1)
    cut = (k + j) / (n + 1)
    low = sum(p <= cut + 1e-12 for p in p_values)
    p = beta_binomial_tail(low, len(p_values), j, good_ranks - j)
    reason = (f"{CHECKS[name]}: {low} of {len(p_values)} ({_pct(low / len(p_values))}) at or below {cut:.3g}, "
              f"expected {_pct(j / good_ranks)}: p = {p_text(p)}")
    return Check(name, "alarm" if p < alpha else "ok", p, reason)


def _value_text(key: str, value: float) -> str:
    if key == "missing_3d":
        return _pct(value)
    if key == "z_median_m":
        return f"{1e3 * value:.1f} mm"
    return f"{value:.1f}"


def health_check(key: str, values: list[float], spread: Moments | None, alpha: float, min_scans: int) -> Check:
    """The window's mean of health value ``key`` against the training scans' (Welch t-test, two-sided)."""
    title = CHECKS[key]
    if spread is None or spread.n < 2:
        return Check(key, "off", None, f"{title}: the model has no training spread of it (written by an older trd, "
                                       "or inputs without it)")
    if len(values) < min_scans:
        return Check(key, "waiting", None, f"{title}: {len(values)} of the {min_scans} scans it needs")
    v = np.asarray(values, dtype=np.float64)
    floor = STD_FLOOR[key]
    mean, std = float(v.mean()), max(float(v.std(ddof=1)), floor)
    result = ttest_ind_from_stats(mean, std, v.size, spread.mean, max(spread.std, floor), spread.n, equal_var=False)
    p = float(result.pvalue)
    reason = (f"{title}: mean {_value_text(key, mean)} over the last {v.size} scans against "
              f"{_value_text(key, spread.mean)} ± {_value_text(key, spread.std)} in training (n = {spread.n}): "
              f"p = {p_text(p)}")
    return Check(key, "alarm" if p < alpha else "ok", p, reason)


def _scan(record: Mapping[str, Any]) -> _Scan:
    health = record.get("input_health") or {}
    p = record.get("p_value")
    if not isinstance(record["anomalous"], bool) or (p is not None and not 0.0 < float(p) <= 1.0):
        raise ValueError(f"anomalous {record['anomalous']!r}, p_value {p!r}")
    return _Scan(record["anomalous"], None if p is None else float(p),
                 {key: None if health.get(key) is None else float(health[key]) for key in HEALTH_KEYS})


class Monitor:
    """The rolling window and its checks; ``add`` one record at a time, in scoring order (one thread).

    ``raised``: how often each check went from quiet to alarm; ``first_alarm``: the number of the
    record (1-based, counting every record added) at which each check first raised its alarm.
    """

    def __init__(self, settings: MonitorSettings | None = None) -> None:
        self.settings = settings or MonitorSettings()
        self._window: deque[_Scan] = deque(maxlen=self.settings.window)
        self._model: str | None = None
        self._basis = _Basis(None, None, {})
        self.seen = 0
        self.raised: Counter[str] = Counter()
        self.first_alarm: dict[str, int] = {}
        self.status = self._evaluate()

    def add(self, record: Mapping[str, Any]) -> Status:
        """Take one scored record (`trd.runtime.records`); the checks on the window it ends.
        ValueError (and nothing changed) for a record whose values are not a record's."""
        try:
            scan, basis, model = _scan(record), _Basis.of(record), (record.get("model") or {}).get("sha256")
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a trd record ({type(exc).__name__}: {exc})") from None
        if model != self._model or not self._window:
            self._window.clear()
            self._model, self._basis = model, basis
        self._window.append(scan)
        self.seen += 1
        before = {c.name for c in self.status.checks if c.alarm}
        self.status = self._evaluate()
        for check in self.status.checks:
            if check.alarm and check.name not in before:
                self.raised[check.name] += 1
                self.first_alarm.setdefault(check.name, self.seen)
        return self.status

    def _evaluate(self) -> Status:
        s, basis, scans = self.settings, self._basis, list(self._window)
        if not scans:
            return Status(0, self.seen, self._model,
                          tuple(Check(name, "waiting", None, f"{title}: no scans yet") for name, title in CHECKS.items()))
        flagged = sum(x.anomalous for x in scans)
        carried = any(x.p_value is not None for x in scans)
        good_p = [x.p_value for x in scans if not x.anomalous and x.p_value is not None] if carried else None
        checks = [flag_rate_check(flagged, len(scans), basis.k, basis.n, s.alpha),
                  p_values_check(good_p, basis.k, basis.n, s.low_share, s.alpha)]
        for key in HEALTH_KEYS:
            values = [x.health[key] for x in scans if x.health[key] is not None and math.isfinite(x.health[key])]
            checks.append(health_check(key, values, basis.spread.get(key), s.alpha, min(s.min_health_scans, s.window)))
        return Status(len(scans), self.seen, self._model, tuple(checks))
