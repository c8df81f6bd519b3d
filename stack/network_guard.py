"""Who may talk to the embedded ClickHouse server: loopback rules, Host/Origin checks, password throttling.

Pure helpers (no sockets are opened here except name resolution for a bind address), so the
server's rules are unit-tested directly:

- the default user's empty password is accepted only on loopback, as ClickHouse's own
  default user is (`<networks><ip>::1</ip><ip>127.0.0.1</ip></networks>`);
- a server bound to loopback answers only requests whose Host names loopback, so a web page
  whose DNS name was re-pointed at 127.0.0.1 (DNS rebinding) cannot drive it;
- repeated wrong passwords from one address are slowed down, one attempt at a time.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def _ip_is_loopback(text: str) -> bool | None:
    """True/False for an IP address (IPv4-mapped IPv6 included), None when `text` is not one."""
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def is_loopback_peer(address: str) -> bool:
    """Whether a connected peer's address is a loopback address."""
    return bool(_ip_is_loopback(address))


def is_loopback_bind(host: str) -> bool:
    """Whether listening on `host` accepts loopback connections only ("" and 0.0.0.0/:: do not)."""
    if host.lower() == "localhost":
        return True
    as_ip = _ip_is_loopback(host)
    if as_ip is not None:
        return as_ip
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(_ip_is_loopback(str(info[4][0])) for info in infos)


def host_header_name(value: str) -> str:
    """The host part of a Host header: `[::1]:8123` -> `::1`, `localhost:8123` -> `localhost`."""
    value = value.strip()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value  # a bare name, an IPv4 address or an unbracketed IPv6 address


def host_header_is_loopback(value: str) -> bool:
    """Whether a Host header names this machine by a loopback name or address."""
    name = host_header_name(value).rstrip(".").lower()
    return name == "localhost" or bool(_ip_is_loopback(name))


@dataclass
class _Failures:
    lock: threading.Lock = field(default_factory=threading.Lock)
    count: int = 0
    last: float = 0.0


class AuthThrottle:
    """Slows down repeated wrong passwords per client address.

    The first `free_failures` wrong passwords cost nothing; then each one waits `base_delay`,
    doubling up to `max_delay`. Attempts from one address hold that address's lock while they
    wait, so concurrent guesses queue instead of waiting side by side. A correct password never
    touches the throttle (and does not reset it: an attacker sharing a NAT address with a real
    client must not get a fresh allowance); failures are forgotten after `forget_after` seconds
    without one.
    """

    MAX_ADDRESSES = 10_000

    def __init__(
        self,
        free_failures: int = 3,
        base_delay: float = 0.25,
        max_delay: float = 5.0,
        forget_after: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self._clock = clock
        self._sleep = sleep
        self._by_address: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def delay_for(self, failures: int) -> float:
        """The wait before answering the `failures`-th consecutive wrong password."""
        if failures <= self.free_failures:
            return 0.0
        return min(self.base_delay * 2 ** (failures - self.free_failures - 1), self.max_delay)

    def failed(self, address: str) -> float:
        """Record a wrong password from `address`, wait as long as it has earned; returns the wait."""
        entry = self._entry(address)
        with entry.lock:
            if self._clock() - entry.last > self.forget_after:
                entry.count = 0
            entry.count += 1
            delay = self.delay_for(entry.count)
            if delay > 0:
                self._sleep(delay)
            entry.last = self._clock()
        return delay

    def _entry(self, address: str) -> _Failures:
        with self._lock:
            entry = self._by_address.get(address)
            if entry is None:
                if len(self._by_address) >= self.MAX_ADDRESSES:
                    self._forget_idle()
                entry = self._by_address[address] = _Failures()
            return entry

    def _forget_idle(self) -> None:
        now = self._clock()
        for address, entry in list(self._by_address.items()):
            if now - entry.last > self.forget_after and not entry.lock.locked():
                del self._by_address[address]
