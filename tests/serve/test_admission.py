"""What `trd serve` lets in (issue 23): Host headers that name it, uploads that arrive in time, pairs
that fit the pixel budget, and a SIGTERM that a slow upload cannot hold up. Real servers and real
sockets on 127.0.0.1: the slow clients send a valid request head, then one byte every half second."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image


class SlowClient:
    """A POST /v1/score that declares a 100 kB body, sends the head of its file part, then one byte of
    the file every half second."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.sendall(f"POST /v1/score HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 100000\r\n"
                          "Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\nContent-Disposition: form-data; "
                          'name="rgb"; filename="scan.png"\r\nContent-Type: image/png\r\n\r\n'.encode())
        self.answer = b""
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _drip(self) -> None:
        self.sock.settimeout(0.5)
        try:
            while True:
                self.sock.sendall(b"x")
                try:
                    chunk = self.sock.recv(4096)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                self.answer += chunk
        except OSError:  # the server closed the connection
            return

    def status(self, timeout: float = 30) -> int:
        """The status code the server answered (after waiting for it), 0 if none."""
        self._thread.join(timeout)
        self.sock.close()
        head = self.answer.split(b"\r\n", 1)[0].split()
        return int(head[1]) if len(head) > 1 else 0

    def error(self) -> str:
        """The ``error`` of the JSON answer."""
        return json.loads(self.answer.split(b"\r\n\r\n", 1)[1])["error"]


def test_only_host_names_of_the_service_are_answered(start_server, messages) -> None:
    server = start_server("--allowed-host", "scanner.line.example")
    port = server.url.rsplit(":", 1)[1]
    for host in ("attacker.example", f"attacker.example:{port}", f"localhost.attacker.example:{port}"):
        refused = httpx.get(f"{server.url}/v1/recent", headers={"Host": host})
        assert refused.status_code == 421, (host, refused.text)  # was 200: recent results for a rebinding page
        assert refused.json()["error"].startswith(f"Host {host!r} is not a name this service answers to")
    messages.record("serve", "a request for another Host name (DNS rebinding)", f"421: {refused.json()['error']}")
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"scanner.line.example:{port}", "[::1]:80"):
        assert httpx.get(f"{server.url}/v1/recent", headers={"Host": host}).status_code == 200, host
    assert server.score(0).status_code == 200  # httpx sends Host: 127.0.0.1:PORT


def test_slow_clients_hold_no_queue_places_and_get_408(start_server, messages) -> None:
    server = start_server("--queue", "4", "--upload-timeout-s", "4")
    slow = [SlowClient(server.url) for _ in range(4)]
    server.wait_for("trd_uploads_in_progress", 4)
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:  # normal requests are scored meanwhile (were: every one 503)
        assert [a.status_code for a in pool.map(server.score, range(3))] == [200] * 3
    assert time.monotonic() - started < 4  # before the slow ones' deadline
    assert [client.status() for client in slow] == [408] * 4
    messages.record("serve", "an upload slower than --upload-timeout-s", f"408: {slow[0].error()}")
    assert time.monotonic() - started < 15
    assert server.metric("trd_uploads_in_progress") == 0 and server.metric("trd_requests_in_flight") == 0


def test_sigterm_with_a_slow_upload_open_exits_after_the_grace_time(start_server, messages) -> None:
    server = start_server("--grace-s", "2")
    slow = SlowClient(server.url)
    server.wait_for("trd_uploads_in_progress", 1)
    started = time.monotonic()
    assert server.stop(timeout=20) == 0  # SIGTERM, then the exit code; was: still running 90 s later
    assert 2 <= time.monotonic() - started < 6
    assert slow.status() == 503  # told to send it again, not cut off
    messages.record("serve", "an upload not complete when the grace time after SIGTERM ends", f"503: {slow.error()}")
    assert "uploads still coming in get 2 s, --grace-s" in server.stderr


def _large_pair(server, factor: int) -> dict[str, tuple[str, bytes]]:
    """Test pair 0 enlarged ``factor`` times per side (same scene, same scale, more pixels)."""
    rgb, xyz = server.pair(0)
    image = np.asarray(Image.open(rgb))
    png, tiff = io.BytesIO(), io.BytesIO()
    Image.fromarray(image.repeat(factor, 0).repeat(factor, 1)).save(png, format="PNG")
    tifffile.imwrite(tiff, tifffile.imread(xyz).repeat(factor, 0).repeat(factor, 1), photometric="rgb", compression="zlib")
    return {"rgb": ("large.png", png.getvalue()), "xyz": ("large.tiff", tiff.getvalue())}


@pytest.mark.slow
def test_pairs_decode_within_the_pixel_budget_while_small_ones_are_served(start_server, messages) -> None:
    """Two large pairs and a budget for one of them plus a small one: the second large pair waits
    for the first (the pixels being decoded never exceed the budget), a small pair is scored meanwhile."""
    factor = 24
    large_px, small_px = (64 * factor) ** 2, 64 * 64
    server = start_server("--pixel-budget", str(large_px + small_px), "--max-wait-ms", "0")
    files = _large_pair(server, factor)
    post = lambda: httpx.post(f"{server.url}/v1/score", files=files, timeout=120)  # noqa: E731
    seen: list[tuple[float, float, float]] = []  # (pixels decoding, requests in flight, uploads coming in)
    with ThreadPoolExecutor(2) as pool:
        large = [pool.submit(post), pool.submit(post)]
        small_status = None
        while not all(f.done() for f in large):
            text = httpx.get(f"{server.url}/metrics").text
            now = [float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))
                   for name in ("trd_decode_pixels", "trd_requests_in_flight", "trd_uploads_in_progress")]
            seen.append(tuple(now))
            if small_status is None and now == [large_px, 2, 0]:  # one large decodes, the other waits
                small_status = server.score(1).status_code
            time.sleep(0.01)
    assert [f.result().status_code for f in large] == [200, 200]
    assert small_status == 200
    assert max(pixels for pixels, _, _ in seen) <= large_px + small_px
    assert server.metric("trd_pixel_budget") == large_px + small_px

    tight = start_server("--pixel-budget", str(small_px - 1))  # a pair larger than the whole budget
    refused = tight.score(0)
    assert refused.status_code == 413
    assert refused.json()["error"] == ("000.png: a pair of 4096 px is more than the service decodes at once "
                                       "(4095 px, --pixel-budget); send smaller scans or raise --pixel-budget")
    messages.record("serve", "a pair larger than the whole --pixel-budget", f"413: {refused.json()['error']}")
