"""How many threads inference may use: the CPUs this process may run on, not the machine's.

A process pinned to some cores (``taskset``, a container's cpuset) that starts one thread per core
of the machine oversubscribes its cores; measured on a 1-core pin, a 1-thread onnxruntime session
scored the paper model 1.32x faster than a default one. Override with ``--threads`` or
``TRD_THREADS``.
"""

from __future__ import annotations

import os

from ..errors import ConfigError


def available_cpus() -> int:
    """CPUs in this process's affinity mask (all CPUs where the OS has no affinity call)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def inference_threads(requested: int | None = None) -> int:
    """``requested``, else ``$TRD_THREADS``, else `available_cpus`; ConfigError for a bad value."""
    raw = requested if requested is not None else os.environ.get("TRD_THREADS")
    if raw is None or raw == "":
        return available_cpus()
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1 or isinstance(raw, bool):
        raise ConfigError(f"threads={raw!r} is out of range: expected an integer >= 1 (--threads or TRD_THREADS)")
    return value
