"""PreprocessCache: hits, invalidation on file or parameter changes, corrupt entries, disabled cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from trd.data.cache import PreprocessCache, cache_key, default_cache_dir

PARAMS = {"modality": "normals", "size": 256, "sobel_k": 5}


class Counter:
    """A compute() that records its calls and returns a different array each time."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return np.full((3, 4, 4), self.calls, dtype=np.float32)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "cloud.tiff"
    path.write_bytes(b"a" * 1000)
    return path


def test_second_call_is_a_hit(tmp_path: Path, source: Path) -> None:
    cache, compute = PreprocessCache(tmp_path / "cache"), Counter()
    first = cache.get(source, PARAMS, compute)
    second = cache.get(source, dict(reversed(PARAMS.items())), compute)  # key order is irrelevant
    assert compute.calls == 1 and (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32 and second.shape == (3, 4, 4)
    entries = list((tmp_path / "cache").rglob("*.npy"))
    assert len(entries) == 1
    key = entries[0].stem
    assert entries[0].relative_to(tmp_path / "cache").parts == (key[:2], key[2:4], f"{key}.npy")
    # a fresh cache object (another run or worker) reads the same entry
    other = PreprocessCache(tmp_path / "cache")
    np.testing.assert_array_equal(other.get(source, PARAMS, compute), first)
    assert compute.calls == 1 and other.hits == 1


def test_parameter_change_misses(tmp_path: Path, source: Path) -> None:
    cache, compute = PreprocessCache(tmp_path), Counter()
    cache.get(source, PARAMS, compute)
    changed = cache.get(source, {**PARAMS, "sobel_k": 7}, compute)
    assert compute.calls == 2 and changed[0, 0, 0] == 2


def test_same_size_and_mtime_content_change_misses(tmp_path: Path, source: Path) -> None:
    cache, compute = PreprocessCache(tmp_path / "cache"), Counter()
    cache.get(source, PARAMS, compute)
    stat = source.stat()
    source.write_bytes(b"b" * 1000)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size and source.stat().st_mtime_ns == stat.st_mtime_ns
    assert cache.get(source, PARAMS, compute)[0, 0, 0] == 2


def test_large_file_tail_change_misses(tmp_path: Path) -> None:
    source = tmp_path / "big.tiff"
    data = bytearray(300 * 1024)
    source.write_bytes(bytes(data))
    stat = source.stat()
    key = cache_key(source, PARAMS)
    data[-1] = 1  # only the last 64 KiB is hashed besides the first: the change must be seen
    source.write_bytes(bytes(data))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache_key(source, PARAMS) != key


def test_mtime_change_misses(tmp_path: Path, source: Path) -> None:
    cache, compute = PreprocessCache(tmp_path / "cache"), Counter()
    cache.get(source, PARAMS, compute)
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    cache.get(source, PARAMS, compute)
    assert compute.calls == 2 and cache.misses == 2


@pytest.mark.parametrize("garbage", [b"", b"not a numpy file", "truncate"])
def test_corrupt_entry_is_recomputed_and_rewritten(tmp_path: Path, source: Path, garbage: bytes | str) -> None:
    cache, compute = PreprocessCache(tmp_path / "cache"), Counter()
    cache.get(source, PARAMS, compute)
    (entry,) = (tmp_path / "cache").rglob("*.npy")
    whole = entry.read_bytes()
    entry.write_bytes(whole[: len(whole) - 8] if garbage == "truncate" else garbage)
    recovered = cache.get(source, PARAMS, compute)
    assert compute.calls == 2 and recovered[0, 0, 0] == 2
    fresh = PreprocessCache(tmp_path / "cache")
    assert fresh.get(source, PARAMS, compute)[0, 0, 0] == 2 and fresh.hits == 1  # rewritten entry


def test_disabled_cache_always_computes(tmp_path: Path, source: Path) -> None:
    cache, compute = PreprocessCache(None), Counter()
    cache.get(source, PARAMS, compute)
    cache.get(source, PARAMS, compute)
    assert compute.calls == 2 and (cache.hits, cache.misses) == (0, 2)
    assert not any(tmp_path.rglob("*.npy"))


def test_missing_source_defers_to_compute(tmp_path: Path) -> None:
    def compute() -> np.ndarray:
        raise FileNotFoundError("reported by the loader")

    with pytest.raises(FileNotFoundError, match="reported by the loader"):
        PreprocessCache(tmp_path).get(tmp_path / "absent.tiff", PARAMS, compute)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRD_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("TRD_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "trd" / "preprocess"


def test_unwritable_cache_warns_and_still_returns(tmp_path: Path, source: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_bytes(b"")
    cache, compute = PreprocessCache(blocker), Counter()
    with pytest.warns(UserWarning, match="could not write"):
        value = cache.get(source, PARAMS, compute)
    assert value[0, 0, 0] == 1
