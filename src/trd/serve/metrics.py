"""The service's Prometheus metrics, written in the text exposition format (version 0.0.4).

Written here rather than with prometheus_client: a few metric families need ~100 lines, and the
runtime install stays one dependency smaller. Thread-safe (the engine worker records batch sizes);
the drift monitor's gauges are read from it as they are at scrape time.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from ..runtime.monitor import Monitor

#: Histogram buckets: request latency (seconds) and batch size (requests).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    escaped = (f'{k}="{v}"'.replace("\\", "\\\\").replace("\n", "\\n") for k, v in pairs)
    return "{" + ",".join(escaped) + "}" if pairs else ""


class Histogram:
    """Cumulative buckets, sum and count per label set."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.series: dict[tuple[tuple[str, str], ...], list[float]] = {}  # labels -> [counts..., +Inf, sum]

    def observe(self, value: float, labels: tuple[tuple[str, str], ...] = ()) -> None:
        row = self.series.setdefault(labels, [0.0] * (len(self.buckets) + 2))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                row[i] += 1
        row[-2] += 1
        row[-1] += value

    def lines(self, name: str) -> list[str]:
        out = []
        for labels, row in sorted(self.series.items()):
            for bound, count in zip((*self.buckets, "+Inf"), row[:-1], strict=True):
                out.append(f"{name}_bucket{_labels((*labels, ('le', str(bound))))} {count:g}")
            out.append(f"{name}_sum{_labels(labels)} {row[-1]:.6g}")
            out.append(f"{name}_count{_labels(labels)} {row[-2]:g}")
        return out


class Metrics:
    """Request counts by endpoint and status code, request latency, batch sizes, and ``gauges``
    (name -> (help text, current value)) such as the queue depth, and the drift monitor's checks."""

    def __init__(self, gauges: Mapping[str, tuple[str, Callable[[], int]]], monitor: Monitor | None = None) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batches = Histogram(BATCH_BUCKETS)
        self._gauges = dict(gauges)
        self._monitor = monitor

    def request(self, endpoint: str, code: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        with self._lock:
            self.requests[(endpoint, str(code))] += 1
            self.latency.observe(seconds, (("endpoint", endpoint),))

    def batch(self, size: int) -> None:
        """Count one engine call of ``size`` requests."""
        with self._lock:
            self.batches.observe(size)

    def render(self) -> str:
        """All metrics in the Prometheus text format."""
        with self._lock:
            lines = ["# HELP trd_requests_total HTTP requests answered, by endpoint and status code.",
                     "# TYPE trd_requests_total counter"]
            lines += [f"trd_requests_total{_labels((('endpoint', e), ('code', c)))} {n}"
                      for (e, c), n in sorted(self.requests.items())]
            lines += ["# HELP trd_request_duration_seconds Time from request to answer.",
                      "# TYPE trd_request_duration_seconds histogram", *self.latency.lines("trd_request_duration_seconds"),
                      "# HELP trd_batch_size Requests scored together in one engine call.",
                      "# TYPE trd_batch_size histogram", *self.batches.lines("trd_batch_size")]
        for name, (text, value) in self._gauges.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {value()}"]
        if self._monitor is not None:
            lines += monitor_lines(self._monitor)
        return "\n".join(lines) + "\n"


def monitor_lines(monitor: Monitor) -> list[str]:
    """The drift monitor's gauges and counters (`trd.runtime.monitor`), one series per check."""
    status = monitor.status

    def family(name: str, kind: str, text: str, values: dict[str, str]) -> list[str]:
        return [f"# HELP {name} {text}", f"# TYPE {name} {kind}",
                *(f"{name}{_labels((('check', check),))} {value}" for check, value in values.items())]

    checks = {c.name: c for c in status.checks}
    return [
        *family("trd_monitor_alarm", "gauge", "1 while the check is in alarm on the current window, else 0.",
                {name: str(int(c.alarm)) for name, c in checks.items()}),
        *family("trd_monitor_p_value", "gauge", "The check's p-value on the current window (NaN while it waits or is off).",
                {name: "NaN" if c.p is None else f"{c.p:.6g}" for name, c in checks.items()}),
        *family("trd_monitor_alarms_raised_total", "counter", "Times the check went into alarm since the start.",
                {name: str(monitor.raised[name]) for name in checks}),
        "# HELP trd_monitor_window_scans Scans in the drift monitor's window.",
        "# TYPE trd_monitor_window_scans gauge", f"trd_monitor_window_scans {status.scans}",
        "# HELP trd_monitor_alarm_any 1 while any check is in alarm, else 0.",
        "# TYPE trd_monitor_alarm_any gauge", f"trd_monitor_alarm_any {int(status.alarm)}",
    ]
