"""What `trd serve` lets in: requests for the names it answers to, and pairs its memory can decode.

**Host names.** A browser page on the service's machine can reach a loopback service under a name
its attacker controls (DNS rebinding: ``attacker.example`` first resolves to the attacker, then to
127.0.0.1) and read what it answers. The page's requests then carry ``Host: attacker.example``. So
the service answers only Host headers that name it: IP literals (a browser that addresses an IP
came for that IP), ``localhost``, the ``--host`` it was given and every ``--allowed-host``. With a
token and no ``--allowed-host`` any name is answered: the token guards the data (a rebinding page
has no token) and a service on a network is reached under names it cannot know.

**Pixels.** Decoding a pair takes memory in proportion to its pixels (about 85 bytes per pixel of
the pair, measured: docs/SERVE.md), and a small compressed upload can declare many pixels. Each
request is charged the pixels its files declare in their headers (`trd.data.readers.Reader.size`),
before anything is decoded; requests decode together only while their charges fit in the budget
(`PixelBudget`), so the memory spent decoding stays under budget x bytes per pixel.
"""

from __future__ import annotations

import asyncio
import ipaddress


def host_name(header: str) -> str:
    """The name of a Host header, without its port, lower case (``[::1]:8000`` -> ``::1``)."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    name, _, port = value.rpartition(":")
    return name.rstrip(".") if name and port.isdigit() else value.rstrip(".")


def allowed_names(host: str, allowed: tuple[str, ...], token: str | None) -> frozenset[str] | None:
    """The names the service answers to besides IP literals (None: any name; see the module docstring)."""
    if token is not None and not allowed:
        return None
    return frozenset({"localhost", host_name(host), *(host_name(a) for a in allowed)})


def host_allowed(header: str, names: frozenset[str] | None) -> bool:
    """Whether a request with Host header ``header`` is answered (no header: only HTTP/1.0 clients,
    which no browser is)."""
    if names is None or not header:
        return True
    name = host_name(header)
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in names


class PixelBudget:
    """Pixels that requests may decode at once: `take` waits until a request's pixels fit."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self._changed = asyncio.Condition()

    async def take(self, pixels: int, timeout_s: float) -> bool:
        """Reserve ``pixels`` (at most ``total``), waiting up to ``timeout_s``; False when they did not fit."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.used + pixels <= self.total), timeout_s)
            except TimeoutError:
                return False
            self.used += pixels
            return True

    async def give(self, pixels: int) -> None:
        """Return the pixels of a request whose decoding is over."""
        async with self._changed:
            self.used -= pixels
            self._changed.notify_all()
