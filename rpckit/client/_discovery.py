"""Where the balanced channel's backends are: static addresses and DNS names, re-resolved.

A target is one of::

    10.0.0.7:50051            a static backend (a host name here is one backend,
    [2001:db8::7]:50051       resolved by grpc itself, like any grpc target)
    dns:///inventory:50051    every A/AAAA record of the name is a backend; the
    dns:inventory:50051       name is resolved again every few seconds

:class:`Discovery` turns a list of targets into the current list of backend
addresses. The resolver is a plain callable ``(host, port) -> [(host, port)]``
so tests (and Consul- or SRV-style lookups) can stand in for DNS; the default,
:func:`system_resolver`, asks the operating system (``getaddrinfo``: A and
AAAA records, /etc/hosts). When a name fails to resolve, or resolves to
nothing, its last good answer is kept: a DNS hiccup must not empty the
backend set (grpc's own resolvers behave the same).

Nothing here starts a thread or reads a clock; the channel decides when to
call :meth:`Discovery.resolve`.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Sequence

__all__ = [
    "Discovery",
    "DnsTarget",
    "Resolution",
    "Resolver",
    "StaticTarget",
    "Target",
    "format_address",
    "parse_target",
    "parse_targets",
    "system_resolver",
]

Resolver = Callable[[str, int], Sequence[tuple[str, int]]]
"""Resolves ``(host, port)`` to the ``(address, port)`` pairs of its backends."""

_FORMS = "expected HOST:PORT, [IPV6]:PORT or dns:///HOST:PORT"

_OTHER_SCHEMES = frozenset(
    {"ipv4", "ipv6", "unix", "unix-abstract", "vsock", "xds", "passthrough", "http", "https"}
)
"""grpc (and URL) schemes a target might carry that the balanced channel does not resolve."""


@dataclasses.dataclass(frozen=True)
class StaticTarget:
    """One backend at a fixed ``address`` (``host:port``)."""

    address: str


@dataclasses.dataclass(frozen=True)
class DnsTarget:
    """Every address a DNS name resolves to, on ``port``; ``text`` is the target as given."""

    host: str
    port: int
    text: str


Target = StaticTarget | DnsTarget


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets: ``[::1]:50051``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_host_port(text: str, target: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port``; ValueError naming ``target`` when malformed."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"malformed target {target!r}: {_FORMS}")
        port_text = rest[1:]
        if ":" not in host:
            raise ValueError(f"malformed target {target!r}: brackets are for IPv6 addresses")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"malformed target {target!r}: no port ({_FORMS})")
        if ":" in host:
            raise ValueError(f"malformed target {target!r}: put an IPv6 address in brackets")
    if not host or any(c.isspace() or c in "/[]@" for c in host):
        raise ValueError(f"malformed target {target!r}: bad host {host!r} ({_FORMS})")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"malformed target {target!r}: port must be 1-65535, got {port_text!r}")
    return host, int(port_text)


def parse_target(text: str) -> Target:
    """Parse one target (see the module docstring); ValueError naming it when malformed."""
    if not isinstance(text, str):
        raise TypeError(f"a target must be a str, got {text!r}")
    if text.startswith("dns:"):
        rest = text[len("dns:") :]
        if rest.startswith("//"):
            authority, sep, rest = rest[2:].partition("/")
            if not sep:
                raise ValueError(f"malformed target {text!r}: {_FORMS}")
            if authority:
                raise ValueError(
                    f"target {text!r} names a DNS server ({authority!r}); only the system's "
                    "resolver is supported: use dns:///HOST:PORT"
                )
        host, port = _split_host_port(rest, text)
        return DnsTarget(host=host, port=port, text=text)
    scheme, sep, rest = text.partition(":")
    if sep and (scheme in _OTHER_SCHEMES or rest.startswith("/")):
        raise ValueError(f"unsupported target {text!r}: only dns: names and HOST:PORT ({_FORMS})")
    host, port = _split_host_port(text, text)
    return StaticTarget(address=format_address(host, port))


def parse_targets(targets: str | Sequence[str]) -> tuple[Target, ...]:
    """Parse a target or a list of them; ValueError for an empty list or a malformed target.

    A single string is one target (never split into characters). Repeated
    targets are kept once.
    """
    texts = [targets] if isinstance(targets, str) else list(targets)
    if not texts:
        raise ValueError("no targets: give at least one HOST:PORT or dns:///HOST:PORT")
    parsed: list[Target] = []
    for text in texts:
        target = parse_target(text)
        if target not in parsed:
            parsed.append(target)
    return tuple(parsed)


def system_resolver(host: str, port: int) -> list[tuple[str, int]]:
    """Every A/AAAA address of ``host`` (through ``getaddrinfo``), in the resolver's order.

    Raises ``OSError`` (``socket.gaierror``) when the name does not resolve.
    """
    found: list[tuple[str, int]] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        pair = (str(sockaddr[0]), port)
        if pair not in found:
            found.append(pair)
    return found


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The backend addresses now (static first, in target order), and what failed to resolve."""

    addresses: tuple[str, ...]
    errors: tuple[str, ...]


class Discovery:
    """The current backend addresses for a list of targets.

    Static targets are always present; each DNS target contributes the
    addresses of its last successful, non-empty resolution. Not thread-safe:
    the channel resolves from one thread.
    """

    def __init__(self, targets: Sequence[Target], resolver: Resolver | None = None) -> None:
        if not targets:
            raise ValueError("no targets: give at least one HOST:PORT or dns:///HOST:PORT")
        self._targets = tuple(targets)
        self._resolver = resolver if resolver is not None else system_resolver
        self._last_good: dict[DnsTarget, tuple[str, ...]] = {}

    @property
    def targets(self) -> tuple[Target, ...]:
        """The targets, as parsed."""
        return self._targets

    @property
    def dynamic(self) -> bool:
        """True when some target is a DNS name that must be resolved (and re-resolved)."""
        return any(isinstance(t, DnsTarget) for t in self._targets)

    def static_addresses(self) -> tuple[str, ...]:
        """The addresses known without resolving anything."""
        return tuple(t.address for t in self._targets if isinstance(t, StaticTarget))

    def resolve(self) -> Resolution:
        """Resolve every DNS target now; a failed or empty answer keeps that name's last good one.

        Exceptions from the resolver are caught and reported in
        :attr:`Resolution.errors` (one line per failing target).
        """
        addresses: list[str] = []
        errors: list[str] = []
        for target in self._targets:
            if isinstance(target, StaticTarget):
                found: tuple[str, ...] = (target.address,)
            else:
                found = self._resolve_name(target, errors)
            for address in found:
                if address not in addresses:
                    addresses.append(address)
        return Resolution(addresses=tuple(addresses), errors=tuple(errors))

    def _resolve_name(self, target: DnsTarget, errors: list[str]) -> tuple[str, ...]:
        try:
            answer = self._resolver(target.host, target.port)
            found = tuple(dict.fromkeys(format_address(str(h), int(p)) for h, p in answer))
        except Exception as exc:  # noqa: BLE001 - any resolver failure keeps the last answer
            errors.append(f"{target.text}: {type(exc).__name__}: {exc}")
            return self._last_good.get(target, ())
        if not found:
            errors.append(f"{target.text}: resolved to no addresses")
            return self._last_good.get(target, ())
        self._last_good[target] = found
        return found
