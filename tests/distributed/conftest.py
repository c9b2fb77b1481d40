"""A real Ray cluster on this machine for the tests: a head node and one worker node.

Each node is the process tree of its own ``ray start`` (own ``--temp-dir``, own agent and worker
ports), started by the fixture and killed by it, process by process, at the end, also when the
test fails. Ray on Linux does not stay on 127.0.0.1 by itself (it takes the machine's first
interface address), so the nodes and the test's drivers run in a loopback-only network namespace
made for the test (``ip netns add``; needs root): every port is free there, nothing of it is
reachable from outside, and ``ip netns pids`` lists exactly the cluster's processes, so stopping
it touches no other Ray on the machine (``ray stop --force`` would). Where no namespace can be
made (not root, no ``ip``, not Linux), the tests that need the cluster skip, saying why. Token
authentication is on with a token of the test's own; ``HOME`` points into the test's folder, so
no ``~/.ray`` file of the machine is read or written.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HEAD_PORT = 6379
#: Node death noticed in ~3 s instead of Ray's default ~15 s.
FAST_HEALTH_CHECK = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                     "RAY_health_check_timeout_ms": "1000"}


def _why_no_namespace() -> str | None:
    if not sys.platform.startswith("linux"):
        return "a loopback-only network namespace for the Ray nodes needs Linux"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing: no network namespace for the Ray nodes"
    if os.geteuid() != 0:
        return "making a network namespace for the Ray nodes (`ip netns add`) needs root"
    return None


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _tree(roots: list[int]) -> set[int]:
    """``roots`` and all their descendants (actors are forked by the raylet and do not carry its
    temp dir on their command line)."""
    todo, seen = list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid == os.getpid():
            continue
        seen.add(pid)
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        todo += [int(c) for c in children.split()]
    return seen


@dataclass
class RayCluster:
    """The running cluster: ``address`` for drivers, ``env`` every process of it uses."""

    netns: str
    root: Path
    env: dict[str, str]
    address: str = f"127.0.0.1:{HEAD_PORT}"
    errors: list[str] = field(default_factory=list)
    _started: threading.Event = field(default_factory=threading.Event)

    def command(self, *args: str) -> list[str]:
        """``args`` run inside the cluster's namespace."""
        return ["ip", "netns", "exec", self.netns, *args]

    def wait_ready(self, timeout: float = 300) -> None:
        assert self._started.wait(timeout), "the Ray nodes did not start in time"
        assert not self.errors, self.errors

    def node_pids(self, node: str) -> set[int]:
        """The processes of ``node`` ("head" or "worker"): those started with its temp dir, and
        their descendants."""
        return _tree(_pids(f"{self.root / node}/"))

    def has_actor(self, node: str) -> bool:
        """Whether a Ray Data actor process runs on ``node``."""
        for pid in self.node_pids(node):
            try:
                if "MapWorker" in Path(f"/proc/{pid}/cmdline").read_text():
                    return True
            except OSError:
                continue
        return False

    def kill_node(self, node: str) -> int:
        """SIGKILL every process of ``node``; how many there were."""
        pids = self.node_pids(node)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def start(self) -> None:
        """Start the head, then the worker node (``ray start`` returns once its node is up)."""
        ray = [sys.executable, "-m", "ray.scripts.scripts", "start", "--node-ip-address=127.0.0.1", "--num-cpus=1",
               "--disable-usage-stats", "--object-store-memory=200000000"]
        nodes = [("head", ["--head", f"--port={HEAD_PORT}", "--include-dashboard=false",
                           "--dashboard-agent-listen-port=52365", "--min-worker-port=20000", "--max-worker-port=20999"],
                  FAST_HEALTH_CHECK),
                 ("worker", [f"--address={self.address}", "--dashboard-agent-listen-port=52366",
                             "--min-worker-port=21000", "--max-worker-port=21999"], {})]
        try:
            for node, args, env in nodes:
                done = subprocess.run(self.command(*ray, f"--temp-dir={self.root / node}", *args),
                                      env=self.env | env, capture_output=True, text=True, timeout=240)
                if done.returncode:
                    self.errors.append(f"ray start ({node}) failed: {done.stderr[-2000:]}")
                    return
        except subprocess.TimeoutExpired as exc:
            self.errors.append(f"ray start timed out: {exc}")
        finally:
            self._started.set()

    def stop(self) -> None:
        """Kill every process of the namespace, then the namespace and the temp dirs."""
        pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True,
                                                             text=True).stdout.split():
            time.sleep(0.2)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """A head and a worker node (1 CPU each) in a namespace of their own, starting in the
    background while the test prepares (``wait_ready`` before the first driver)."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'trd-anomaly[ray]' (the dev extra has it)")
    reason = _why_no_namespace()
    if reason:
        pytest.skip(reason)
    netns = f"trdray{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", netns], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"cannot make a network namespace for the Ray nodes: {made.stderr.strip()}")
    subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
    root = Path(tempfile.mkdtemp(prefix="trdray", dir="/tmp"))  # short: Ray's socket paths live below it
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    (root / "home").mkdir()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               HOME=str(root / "home"), RAY_DEDUP_LOGS="0")
    cluster = RayCluster(netns, root, env)
    starter = threading.Thread(target=cluster.start, daemon=True)
    starter.start()
    try:
        yield cluster
    finally:
        starter.join(timeout=300)
        cluster.stop()
