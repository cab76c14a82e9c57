"""The auth gate: every gRPC call asks the :class:`~rpckit.core._auth.AuthPolicy` before admission.

grpcio hands each call to its executor's ``submit`` on the dispatch thread.
:class:`AuthGate` is that executor: it reads the call's method, metadata, peer
and TLS identity from grpcio's arguments (:mod:`rpckit.server._grpc_internals`),
asks the policy, and passes an allowed call on to the admission executor. A
refused call never reaches admission control (no queue slot, no handler
thread): it is ended at once with UNAUTHENTICATED or PERMISSION_DENIED and the
policy's message, counted (``rpckit_auth_denied_total``, and in
``grpc_server_handled_total`` under its code) and logged once per interval.
A hook that raised is logged with its traceback (never sent) and the call is
refused (fail closed, see ``rpckit.core._auth``).

Calls are checked whatever interceptors the server has; health calls too when
the policy guards them (the server then routes them through here, not
grpcio's ``experimental_thread_pool``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from rpckit.core._auth import AuthCode, AuthPolicy, AuthResult, Caller, Deny, bearer_token
from rpckit.server._bad_input import SharedLogInterval
from rpckit.server._grpc_internals import abort_queued, read_call, read_peer

__all__ = ["AuthGate", "RefusalLog", "caller_of", "take_denial"]

_log = logging.getLogger("rpckit.server.auth")

#: Told of every refused call: (method, code).
DeniedObserver = Callable[[str, AuthCode], None]

_local = threading.local()


def take_denial() -> Deny | None:
    """The refusal this thread must answer with (the gate's fallback path); consumed on read."""
    denial: Deny | None = getattr(_local, "denial", None)
    if denial is not None:
        _local.denial = None
    return denial


def caller_of(
    method: str,
    metadata: Sequence[tuple[str, Any]],
    peer: str,
    auth_context: Mapping[str, Sequence[bytes]],
) -> Caller:
    """The :class:`Caller` a gRPC call presents (text metadata only; binary values left out)."""
    pairs = tuple((k, v) for k, v in metadata if isinstance(k, str) and isinstance(v, str))
    subject = _first_text(auth_context.get("x509_subject", ()))
    sans = tuple(
        v.decode("utf-8", "replace")
        for v in auth_context.get("x509_subject_alternative_name", ())
        if isinstance(v, bytes)
    )
    return Caller(
        method=method,
        transport="grpc",
        peer=peer,
        token=bearer_token(pairs),
        cert_subject=subject,
        cert_sans=sans,
        metadata=pairs,
    )


def _first_text(values: Sequence[bytes]) -> str | None:
    for value in values:
        if isinstance(value, bytes) and value:
            return value.decode("utf-8", "replace")
    return None


class RefusalLog:
    """Refused calls in the log: once per interval with the number held back, so a flood of
    bad credentials stays one line a minute; a failed hook with its traceback (log only)."""

    def __init__(self, log: logging.Logger, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._denied = SharedLogInterval(clock=clock)
        self._failed = SharedLogInterval(clock=clock)

    def __call__(self, what: str, peer: str, deny: Deny, error: BaseException | None) -> None:
        held = (self._failed if error is not None else self._denied).admit()
        if held is None:
            return
        more = f" ({held} more since the last report)" if held else ""
        who = peer or "an unknown peer"
        if error is not None:
            self._log.error(
                "the auth hook failed on %s from %s; refused %s%s",
                what,
                who,
                deny.code.value,
                more,
                exc_info=error,
            )
        else:
            self._log.info(
                "refused %s from %s: %s: %s%s", what, who, deny.code.value, deny.message, more
            )


class AuthGate(concurrent.futures.Executor):
    """grpcio's executor: the auth policy first, then ``inner`` (the admission executor)."""

    def __init__(
        self,
        inner: concurrent.futures.Executor,
        policy: AuthPolicy,
        *,
        fallback_pool: concurrent.futures.Executor,
        on_denied: DeniedObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._fallback_pool = fallback_pool
        self._on_denied = on_denied
        self._report = RefusalLog(_log, clock=clock)

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        call = read_call(args)
        if call is None:  # grpcio's shapes differ: nothing to check against; fail closed
            result = AuthResult(
                Deny.unauthenticated("the server cannot read the call"), checked=False
            )
            return self._refuse("", result, fn, args, kwargs)
        if not self._policy.applies_to(call.method):
            return self._inner.submit(fn, *args, **kwargs)
        peer = read_peer(args)
        caller = caller_of(
            call.method,
            call.metadata,
            peer.peer if peer is not None else "",
            peer.auth_context if peer is not None else {},
        )
        result = self._policy.decide(caller)
        if result.allowed:
            return self._inner.submit(fn, *args, **kwargs)
        return self._refuse(caller.method, result, fn, args, kwargs, peer=caller.peer)

    def _refuse(
        self,
        method: str,
        result: AuthResult,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        peer: str = "",
    ) -> concurrent.futures.Future[Any]:
        deny = result.decision
        assert isinstance(deny, Deny)
        self._report(method, peer, deny, result.error)
        if self._on_denied is not None:
            self._on_denied(method, deny.code)
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if abort_queued(args, grpc.StatusCode[deny.code.value], deny.message, ()):
            done.set_result(None)
            return done
        # grpcio's shapes differ: run the call's handler wrapper, which answers the denial.
        return self._fallback_pool.submit(_run_denied, deny, fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait=wait, cancel_futures=cancel_futures)


def _run_denied(deny: Deny, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> None:
    _local.denial = deny
    try:
        fn(*args, **kwargs)
    finally:
        _local.denial = None
