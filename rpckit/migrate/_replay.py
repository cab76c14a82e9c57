"""``rpckit migrate diff``'s I/O: replay recorded requests through WSGI apps in process.

Three lanes get every sample, in recorded order: the old app twice (two
instances when it comes from a factory) and the new one. The two old answers
teach the :class:`~rpckit.migrate._diff.NoiseTable`; the new answer is
compared with the first old one, and each difference is real, noise, or
deliberate (an ignore rule).

Writes: a request whose method is not GET, HEAD or OPTIONS is replayed only
when the new app routes it to an RPC marked ``idempotency_level =
NO_SIDE_EFFECTS``, or with ``allow_writes`` (say so only when every lane's
state is throwaway: apps built by a factory over in-memory or test data).
Redacted credentials can be put back for the replay (``set_headers``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from rpckit.core._validate import check_fields
from rpckit.migrate._diff import (
    Answer,
    Difference,
    IgnoreRule,
    NoiseTable,
    compare,
    first_rule,
)
from rpckit.migrate._diff_report import DiffReport
from rpckit.migrate._samples import REDACTED, Exchange

__all__ = ["ReplayOptions", "answer", "legacy_route", "run_diff"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayOptions:
    """How samples are replayed (module docstring).

    Attributes:
        allow_writes: replay non-safe methods on every route.
        set_headers: header name -> value put in place of a redacted value.
        max_body_bytes: a response body is read up to this, then cut (a
            streaming answer must not hang the replay).
        rules: deliberate differences.
    """

    allow_writes: bool = False
    set_headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    max_body_bytes: int = 16 * 1024 * 1024
    rules: Sequence[IgnoreRule] = ()

    def __post_init__(self) -> None:
        check_fields(self)


def answer(app: Any, exchange: Exchange, options: ReplayOptions) -> Answer:
    """Send ``exchange``'s request to the WSGI ``app`` and read its answer (bounded)."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    headers = []
    overrides = {k.lower(): v for k, v in options.set_headers.items()}
    content_type = None
    for name, recorded in exchange.headers:
        lower = name.lower()
        value = overrides[lower] if lower in overrides and REDACTED in recorded else recorded
        if lower == "content-type":
            content_type = value
        elif lower != "content-length":
            headers.append((name, value))
    builder = EnvironBuilder(
        path=exchange.path,
        method=exchange.method,
        query_string=exchange.query,
        headers=headers,
        data=exchange.body if exchange.body is not None else None,
        content_type=content_type,
    )
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    iterable, status, response_headers = run_wsgi_app(app, environ, buffered=False)
    body = bytearray()
    try:
        for chunk in iterable:
            body += chunk
            if len(body) > options.max_body_bytes:
                del body[options.max_body_bytes :]
                break
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    code, _, reason = status.partition(" ")
    return Answer(
        int(code), reason, tuple((str(k), str(v)) for k, v in response_headers.items()), bytes(body)
    )


def legacy_route(app: Any) -> Callable[[Exchange], str]:
    """``exchange -> "METHOD /rule"`` by the old Flask app's URL map (``"METHOD (no route)"``)."""
    url_map = getattr(app, "url_map", None)
    if url_map is None:
        return lambda exchange: f"{exchange.method} {exchange.path}"
    from urllib.parse import unquote

    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect

    adapter = url_map.bind("localhost")

    def route(exchange: Exchange) -> str:
        try:
            rule, _ = adapter.match(
                unquote(exchange.path), method=exchange.method, return_rule=True
            )
        except RequestRedirect:
            return f"{exchange.method} (redirect)"
        except HTTPException:
            return f"{exchange.method} (no route)"
        return f"{exchange.method} {rule.rule}"

    return route


def _shim_of(app: Any) -> Any:
    """The rpckit shim serving ``app`` (the app itself, or a Flask app's ``wsgi_app``), if any."""
    for candidate in (app, getattr(app, "wsgi_app", None)):
        if (
            candidate is not None
            and hasattr(candidate, "router")
            and hasattr(candidate, "services")
        ):
            return candidate
    return None


def side_effect_free(app: Any) -> Callable[[Exchange], bool]:
    """``exchange -> True`` when the new app routes it to a NO_SIDE_EFFECTS RPC."""
    shim = _shim_of(app)
    if shim is None:
        return lambda exchange: False
    from google.protobuf import descriptor_pb2

    free = {
        f"/{service.full_name}/{method.name}"
        for service in shim.services
        for method in service.methods
        if method.GetOptions().idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    }
    from rpckit.http._mapping._routes import Match

    def check(exchange: Exchange) -> bool:
        resolution = shim.router.resolve(exchange.method, exchange.path)
        return isinstance(resolution, Match) and resolution.route.grpc_method in free

    return check


def _held_back_write(
    exchange: Exchange, options: ReplayOptions, harmless: Callable[[Exchange], bool]
) -> str:
    """Why a write is not replayed ("" when it is: safe, ``NO_SIDE_EFFECTS`` or allowed)."""
    if exchange.method in SAFE_METHODS or options.allow_writes or harmless(exchange):
        return ""
    return f"{exchange.method}: a write; allow writes (--allow-writes) on throwaway state only"


def run_diff(
    samples: Sequence[Exchange],
    *,
    old: Callable[[], Any],
    old_fresh: bool,
    new: Callable[[], Any],
    options: ReplayOptions,
    progress: Callable[[int, int], None] | None = None,
) -> DiffReport:
    """Replay ``samples`` through two old lanes and the new one; the report (module docstring)."""
    first_old = old()
    second_old = old() if old_fresh else first_old
    candidate = new()
    route_of = legacy_route(first_old)
    harmless = side_effect_free(candidate)
    noise = NoiseTable()
    report = DiffReport()
    pending: list[tuple[int, str, Answer, list[Difference]]] = []
    total = len(samples)
    for number, exchange in enumerate(samples, start=1):
        if progress is not None:
            progress(number, total)
        if exchange.body_truncated:
            report.skip("request body was not recorded (over the recorder's size bound)")
            continue
        held_back = _held_back_write(exchange, options, harmless)
        if held_back:
            report.skip(held_back)
            continue
        route = route_of(exchange)
        primary = answer(first_old, exchange, options)
        secondary = answer(second_old, exchange, options)
        noise.learn(route, compare(primary, secondary))
        ours = answer(candidate, exchange, options)
        pending.append((number, route, primary, compare(primary, ours)))
    for number, route, primary, differences in pending:
        _classify(
            report,
            differences,
            noise=noise,
            rules=options.rules,
            number=number,
            route=route,
            old_status=primary.status,
        )
    return report


def _classify(
    report: DiffReport,
    differences: Sequence[Difference],
    *,
    noise: NoiseTable,
    rules: Iterable[IgnoreRule],
    number: int,
    route: str,
    old_status: int,
) -> None:
    real, noisy, ignored = [], [], []
    rule_list = list(rules)
    for difference in differences:
        rule = first_rule(rule_list, route, old_status, difference)
        if rule is not None:
            ignored.append((difference, rule))
        elif noise.is_noise(route, difference):
            noisy.append(difference)
        else:
            real.append(difference)
    report.add(sample=number, route=route, real=real, noise=noisy, ignored=ignored)


#: Response headers a recorded answer is held to by :func:`replay_recorded`.
RECORDED_HEADERS = ("content-type", "location", "www-authenticate", "allow")


def replay_recorded(
    samples: Sequence[Exchange],
    *,
    app: Callable[[], Any],
    options: ReplayOptions,
    progress: Callable[[int, int], None] | None = None,
) -> DiffReport:
    """Replay ``samples`` in order through one app and hold it to the recorded answers.

    Compared: status, body, and the headers in :data:`RECORDED_HEADERS`
    (Content-Type only with a body). Samples whose response was not recorded
    whole are skipped; writes as in :func:`run_diff`.
    """
    target = app()
    route_of = legacy_route(target)
    harmless = side_effect_free(target)
    report = DiffReport()
    for number, exchange in enumerate(samples, start=1):
        if progress is not None:
            progress(number, len(samples))
        if exchange.body_truncated or exchange.response_truncated or exchange.response_body is None:
            report.skip("not recorded whole (over the recorder's size bound)")
            continue
        held_back = _held_back_write(exchange, options, harmless)
        if held_back:
            report.skip(held_back)
            continue
        got = answer(target, exchange, options)
        recorded = Answer(
            exchange.status,
            "",
            _held(exchange.response_headers, exchange.response_body),
            exchange.response_body,
        )
        ours = Answer(got.status, "", _held(got.headers, got.body), got.body)
        _classify(
            report,
            compare(recorded, ours),
            noise=NoiseTable(),
            rules=options.rules,
            number=number,
            route=route_of(exchange),
            old_status=exchange.status,
        )
    return report


def _held(headers: Iterable[tuple[str, str]], body: bytes) -> tuple[tuple[str, str], ...]:
    return tuple(
        (k, v)
        for k, v in headers
        if k.lower() in RECORDED_HEADERS and (body or k.lower() != "content-type")
    )
