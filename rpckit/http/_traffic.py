"""Legacy-traffic counters: who still calls the old HTTP contract, on which routes, and how.

A team removes the shim when its counters stay at zero. Each answered request
is counted once by ``(route, method, status, caller, served_by)``:

* ``route``: the matched binding's template (``/items/{sku}``), or
  ``(fallback)`` for requests no migrated route matched;
* ``method``: the request's HTTP method; ``status``: the status served;
* ``caller``: a configured header's value (``X-Caller``) or the User-Agent's
  first product token (``python-requests/2.32``), ``(unknown)`` without either;
  after ``max_callers`` distinct callers the rest count as ``(other)``;
* ``served_by``: ``rpckit`` or ``fallback``.

Shadow comparisons are counted per route as ``match`` / ``mismatch``. The
counts are exposed as a JSON report (:meth:`TrafficCounters.report`) and as
Prometheus counters in a registry of their own (:meth:`TrafficCounters.registry`),
never prometheus_client's global one. Counting is plain Python under a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["FALLBACK_ROUTE", "OTHER_CALLER", "UNKNOWN_CALLER", "TrafficCounters", "caller_of"]

UNKNOWN_CALLER = "(unknown)"
OTHER_CALLER = "(other)"
FALLBACK_ROUTE = "(fallback)"

#: Longest caller label kept; longer values are cut (label values are not for essays).
MAX_CALLER_CHARS = 64


def caller_of(environ: Mapping[str, Any], header: str | None) -> str:
    """The caller label for a request: ``header``'s value, else the User-Agent's first token."""
    if header is not None:
        value = environ.get("HTTP_" + header.upper().replace("-", "_"))
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_CALLER_CHARS]
        return UNKNOWN_CALLER
    agent = environ.get("HTTP_USER_AGENT")
    if isinstance(agent, str) and agent.strip():
        return agent.split()[0][:MAX_CALLER_CHARS]
    return UNKNOWN_CALLER


class TrafficCounters:
    """Thread-safe request and shadow counts (module docstring)."""

    def __init__(self, *, max_callers: int) -> None:
        self._lock = threading.Lock()
        self._max_callers = max_callers
        self._callers: set[str] = set()
        self._requests: dict[tuple[str, str, int, str, str], int] = {}
        self._shadow: dict[tuple[str, str], int] = {}

    def record(self, *, route: str, method: str, status: int, caller: str, served_by: str) -> None:
        with self._lock:
            if caller not in self._callers:
                if len(self._callers) >= self._max_callers:
                    caller = OTHER_CALLER
                else:
                    self._callers.add(caller)
            key = (route, method, status, caller, served_by)
            self._requests[key] = self._requests.get(key, 0) + 1

    def record_shadow(self, *, route: str, matched: bool) -> None:
        with self._lock:
            key = (route, "match" if matched else "mismatch")
            self._shadow[key] = self._shadow.get(key, 0) + 1

    def report(self) -> dict[str, Any]:
        """The counts as JSON-ready data, sorted, with totals."""
        with self._lock:
            requests = sorted(self._requests.items())
            shadow = sorted(self._shadow.items())
        return {
            "total": sum(count for _, count in requests),
            "requests": [
                {
                    "route": route,
                    "method": method,
                    "status": status,
                    "caller": caller,
                    "served_by": served_by,
                    "count": count,
                }
                for (route, method, status, caller, served_by), count in requests
            ],
            "shadow": [
                {"route": route, "outcome": outcome, "count": count}
                for (route, outcome), count in shadow
            ],
        }

    def collect(self) -> Iterator[Any]:
        """Prometheus metric families (``collect()`` of a custom collector)."""
        from prometheus_client.core import CounterMetricFamily

        with self._lock:
            requests = sorted(self._requests.items())
            shadow = sorted(self._shadow.items())
        family = CounterMetricFamily(
            "rpckit_http_requests",
            "Requests answered by the legacy HTTP shim, by route, method, status and caller.",
            labels=["route", "method", "status", "caller", "served_by"],
        )
        for (route, method, status, caller, served_by), count in requests:
            family.add_metric([route, method, str(status), caller, served_by], count)
        yield family
        compared = CounterMetricFamily(
            "rpckit_http_shadow_comparisons",
            "Shadowed requests whose two answers matched or differed, by route.",
            labels=["route", "outcome"],
        )
        for (route, outcome), count in shadow:
            compared.add_metric([route, outcome], count)
        yield compared

    def registry(self) -> Any:
        """A new prometheus_client ``CollectorRegistry`` holding only these counters."""
        try:
            from prometheus_client import CollectorRegistry
        except ImportError:
            raise RuntimeError(
                "Prometheus counters need prometheus-client: pip install 'rpckit[metrics]'"
            ) from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry
