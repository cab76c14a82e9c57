"""Who may call: one authentication policy for the gRPC port and the HTTP shim (pure).

    def check(caller: Caller) -> Decision:
        if caller.token is None and caller.cert_subject is None:
            return Deny.unauthenticated("send 'authorization: Bearer <token>'")
        user = USERS.get(caller.token or "")
        if user is None:
            return Deny.unauthenticated("unknown token")
        if caller.method.startswith("/shop.Admin/") and not user.admin:
            return Deny.permission_denied("admins only")
        return Allow(user)

    ServerConfig(auth=AuthPolicy(hook=check))   # rpckit serve --auth mymodule:check

The hook sees one :class:`Caller` per call -- the method, the bearer token, the
TLS client certificate's subject and SANs (mTLS), the peer address and the
request metadata -- and answers :class:`Allow` or :class:`Deny` (``True`` and
``False`` work too). The gRPC server asks it before admission control, so a
refused call costs no queue slot or handler thread, and answers UNAUTHENTICATED
or PERMISSION_DENIED; the HTTP shim asks it before a route's guard and answers
401 (with ``WWW-Authenticate: Bearer``) or 403. This module only decides
(:meth:`AuthPolicy.decide`); the adapters read the call and answer it
(``rpckit.server._auth_gate``, ``rpckit.http._app``).

A hook that raises fails closed: the call is refused UNAUTHENTICATED ("could not
check the caller's credentials"), the exception goes to the server's log and
never to the caller. UNAUTHENTICATED, not PERMISSION_DENIED: no identity was
established, and it is the answer a client with good credentials can act on
(retry later, refresh its token); PERMISSION_DENIED would claim the server knows
who the caller is and refuses them. Never UNAVAILABLE or INTERNAL: clients and
balancers retry those elsewhere, which would route around a broken check.

Health and reflection get their own rule (:attr:`AuthPolicy.health`,
:attr:`AuthPolicy.reflection`): load balancers call health without credentials,
so it stays open by default; reflection lists every method and message, so by
default only callers the hook allows may use it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable
from typing import Any, Literal

from rpckit.core._validate import check_fields

__all__ = [
    "HEALTH_SERVICE",
    "REFLECTION_SERVICES",
    "Allow",
    "AuthCode",
    "AuthHook",
    "AuthPolicy",
    "AuthResult",
    "Caller",
    "Decision",
    "Deny",
    "bearer_token",
    "identity_from_peercert",
]

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
#: The WSGI environ key under which the embedded HTTP server puts a TLS client's
#: certificate (``ssl.SSLSocket.getpeercert()``'s dict) for the shim.
PEER_CERT_ENVIRON_KEY = "rpckit.peer_cert"
#: RFC 4514's short names of the attribute types ``getpeercert()`` spells out.
_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
#: The status message of a call refused because the hook raised (its error is logged).
HOOK_FAILED_MESSAGE = "could not check the caller's credentials (the server logged why)"


class AuthCode(enum.Enum):
    """Why a call is refused; the value is the gRPC status code's name."""

    UNAUTHENTICATED = "UNAUTHENTICATED"  # no credentials, or ones that do not check out
    PERMISSION_DENIED = "PERMISSION_DENIED"  # a known caller that may not call this

    @property
    def http_status(self) -> int:
        return 401 if self is AuthCode.UNAUTHENTICATED else 403


@dataclasses.dataclass(frozen=True, kw_only=True)
class Caller:
    """What is known about a caller when a call arrives, before anything runs.

    Attributes:
        method: ``/package.Service/Method`` (for the shim, the method the route calls).
        transport: ``"grpc"`` or ``"http"``.
        peer: the network peer (``ipv4:127.0.0.1:50123``).
        token: the bearer token from ``authorization: Bearer <token>``, if any.
        cert_subject: the TLS client certificate's subject (RFC 4514 text, e.g.
            ``CN=billing,O=shop``) when the caller presented one (mTLS); None otherwise.
        cert_sans: the certificate's subject alternative names (DNS names, URIs
            such as SPIFFE ids, IP addresses, e-mail addresses).
        metadata: the request metadata (gRPC) or the forwarded headers (shim),
            lower-case keys; binary values are left out.
    """

    method: str
    transport: Literal["grpc", "http"]
    peer: str = ""
    token: str | None = None
    cert_subject: str | None = None
    cert_sans: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def presented_credentials(self) -> bool:
        """True when the caller sent a token or a client certificate."""
        return self.token is not None or self.cert_subject is not None

    def header(self, key: str) -> str | None:
        """The first metadata value under ``key`` (lower case), or None."""
        return next((v for k, v in self.metadata if k == key), None)


@dataclasses.dataclass(frozen=True)
class Allow:
    """Let the call run. ``identity`` (a user record, say) is for the shim's handlers
    (``rpckit.http.guard_identity()``)."""

    identity: object = None


@dataclasses.dataclass(frozen=True)
class Deny:
    """Refuse the call with ``code`` and ``message`` (said to the caller: keep secrets out)."""

    code: AuthCode
    message: str

    @classmethod
    def unauthenticated(cls, message: str = "credentials missing or invalid") -> Deny:
        return cls(AuthCode.UNAUTHENTICATED, message)

    @classmethod
    def permission_denied(cls, message: str = "the caller may not call this method") -> Deny:
        return cls(AuthCode.PERMISSION_DENIED, message)


Decision = Allow | Deny
#: The user's hook: a :class:`Decision`, or a bool (``False``: UNAUTHENTICATED when the
#: caller sent no credentials, else PERMISSION_DENIED).
AuthHook = Callable[[Caller], "Decision | bool"]
OpenOrAuthenticated = Literal["open", "authenticated"]


@dataclasses.dataclass(frozen=True)
class AuthResult:
    """What :meth:`AuthPolicy.decide` concluded. ``checked``: the hook ran;
    ``error``: the hook raised (the call is refused; log it, never send it)."""

    decision: Decision
    checked: bool
    error: BaseException | None = None

    @property
    def allowed(self) -> bool:
        return isinstance(self.decision, Allow)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuthPolicy:
    """Which calls the hook decides, and how its answers become refusals.

    Attributes:
        hook: the user's check (:data:`AuthHook`); runs on the server's dispatch
            thread for gRPC calls (keep it fast: a dict lookup or a signature
            check; cache anything that needs I/O).
        health: ``"open"`` (default): ``grpc.health.v1.Health`` is answered
            without asking the hook (load balancers probe without credentials);
            ``"authenticated"``: the hook decides, as for any method.
        reflection: ``"authenticated"`` (default): reflection only for callers the
            hook allows; ``"open"``: for everyone. Turn it off altogether with
            ``ServerConfig(reflection=False)`` (``rpckit serve --no-reflection``).
        realm: the ``realm`` of the shim's ``WWW-Authenticate: Bearer`` challenge.
    """

    hook: AuthHook
    health: OpenOrAuthenticated = "open"
    reflection: OpenOrAuthenticated = "authenticated"
    realm: str = "rpckit"

    def __post_init__(self) -> None:
        check_fields(self)
        if not callable(self.hook):
            raise TypeError(f"AuthPolicy.hook must be callable, not {self.hook!r}")
        if not self.realm.isprintable() or '"' in self.realm or "\\" in self.realm:
            raise ValueError(f"AuthPolicy.realm must be printable, without quotes: {self.realm!r}")

    def applies_to(self, method: str) -> bool:
        """Whether the hook decides calls of ``method`` (``/pkg.Service/Method``)."""
        service = method.lstrip("/").split("/", 1)[0]
        if service == HEALTH_SERVICE:
            return self.health == "authenticated"
        if service in REFLECTION_SERVICES:
            return self.reflection == "authenticated"
        return True

    def decide(self, caller: Caller) -> AuthResult:
        """Ask the hook about ``caller`` (unless the method is open); never raises."""
        if not self.applies_to(caller.method):
            return AuthResult(Allow(), checked=False)
        try:
            answer: Any = self.hook(caller)
        except Exception as exc:  # noqa: BLE001 - a broken hook fails closed, see the docstring
            return AuthResult(Deny.unauthenticated(HOOK_FAILED_MESSAGE), checked=True, error=exc)
        if isinstance(answer, (Allow, Deny)):
            return AuthResult(answer, checked=True)
        if answer is True:
            return AuthResult(Allow(), checked=True)
        if answer is False:
            denied = (
                Deny.permission_denied()
                if caller.presented_credentials
                else Deny.unauthenticated("no credentials: send 'authorization: Bearer <token>'")
            )
            return AuthResult(denied, checked=True)
        error = TypeError(
            f"the auth hook returned {type(answer).__name__}; return Allow, Deny, True or False"
        )
        return AuthResult(Deny.unauthenticated(HOOK_FAILED_MESSAGE), checked=True, error=error)

    @property
    def challenge(self) -> str:
        """The shim's ``WWW-Authenticate`` value for an UNAUTHENTICATED refusal (RFC 6750)."""
        return f'Bearer realm="{self.realm}"'


def bearer_token(pairs: Iterable[tuple[str, Any]]) -> str | None:
    """The token of the first ``authorization: Bearer <token>`` pair (scheme case-insensitive)."""
    for key, value in pairs:
        if key != "authorization" or not isinstance(value, str):
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def identity_from_peercert(cert: Any) -> tuple[str | None, tuple[str, ...]]:
    """``(subject, SANs)`` of a ``getpeercert()`` dict, the subject spelled as the gRPC
    port's auth context spells it (RFC 4514: ``CN=a,OU=b,O=c``, most specific first)."""
    if not isinstance(cert, dict) or not cert.get("subject"):
        return None, ()
    parts = []
    for rdn in reversed(cert["subject"]):
        parts.append("+".join(f"{_SHORT_NAMES.get(k, k)}={_escape(v)}" for k, v in rdn))
    sans = tuple(str(v) for _, v in cert.get("subjectAltName", ()))
    return ",".join(parts), sans


def _escape(value: str) -> str:
    """RFC 4514 escaping of an attribute value."""
    out = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" "):
        out = out[:-1] + "\\ "
    return out
