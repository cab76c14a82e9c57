"""The auth policy alone (pure): which calls the hook decides, its answers, its failures."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpckit.core._auth import (
    HOOK_FAILED_MESSAGE,
    Allow,
    AuthCode,
    AuthPolicy,
    Caller,
    Deny,
    bearer_token,
    identity_from_peercert,
)

GET = "/shop.Items/Get"


def _caller(method: str = GET, **fields: Any) -> Caller:
    return Caller(method=method, transport="grpc", **fields)


def _policy(answer: Any, **options: Any) -> AuthPolicy:
    return AuthPolicy(hook=lambda caller: answer, **options)


def test_decisions_pass_through_and_bools_become_the_right_code() -> None:
    assert _policy(Allow("ann")).decide(_caller()).decision == Allow("ann")
    deny = Deny.permission_denied("no")
    assert _policy(deny).decide(_caller(token="t")).decision == deny
    assert _policy(True).decide(_caller()).decision == Allow()
    # False: no credentials at all -> UNAUTHENTICATED; a token or a cert -> PERMISSION_DENIED.
    assert _policy(False).decide(_caller()).decision.code is AuthCode.UNAUTHENTICATED  # type: ignore[union-attr]
    for presented in ({"token": "t"}, {"cert_subject": "CN=a"}):
        decision = _policy(False).decide(_caller(**presented)).decision
        assert isinstance(decision, Deny)
        assert decision.code is AuthCode.PERMISSION_DENIED


@pytest.mark.parametrize("failure", ["raises", "returns None", "returns a string"])
def test_a_broken_hook_fails_closed_and_keeps_its_error_for_the_log(failure: str) -> None:
    def hook(caller: Caller) -> Any:
        if failure == "raises":
            raise ConnectionError("token store down")
        return None if failure == "returns None" else "allow"

    result = AuthPolicy(hook=hook).decide(_caller(token="t"))
    assert result.decision == Deny(AuthCode.UNAUTHENTICATED, HOOK_FAILED_MESSAGE)
    assert result.checked
    assert not result.allowed
    assert isinstance(result.error, ConnectionError if failure == "raises" else TypeError)


def test_health_is_open_and_reflection_guarded_by_default() -> None:
    calls: list[str] = []

    def hook(caller: Caller) -> bool:
        calls.append(caller.method)
        return False

    policy = AuthPolicy(hook=hook)
    health = policy.decide(_caller("/grpc.health.v1.Health/Check"))
    assert health.allowed
    assert not health.checked
    for service in (
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    ):
        assert not policy.decide(_caller(f"/{service}/ServerReflectionInfo")).allowed
    assert len(calls) == 2
    flipped = AuthPolicy(hook=hook, health="authenticated", reflection="open")
    assert not flipped.decide(_caller("/grpc.health.v1.Health/Watch")).allowed
    assert flipped.decide(
        _caller("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    ).allowed


def test_bad_policies_are_refused_when_built() -> None:
    with pytest.raises(TypeError, match=r"AuthPolicy\.hook must be callable"):
        AuthPolicy(hook="module:check")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"AuthPolicy\.health must be one of"):
        AuthPolicy(hook=bool, health="closed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"AuthPolicy\.realm must be printable"):
        AuthPolicy(hook=bool, realm='a"b')


@pytest.mark.parametrize(
    ("pairs", "token"),
    [
        ([("authorization", "Bearer abc")], "abc"),
        ([("authorization", "bearer   abc ")], "abc"),
        ([("authorization", "Basic dXNlcg==")], None),
        ([("authorization", "Bearer ")], None),
        ([("authorization", b"Bearer abc")], None),  # binary metadata is not a token
        ([("x-other", "Bearer abc"), ("authorization", "Bearer second")], "second"),
        ([], None),
    ],
)
def test_bearer_token(pairs: list[tuple[str, Any]], token: str | None) -> None:
    assert bearer_token(pairs) == token


@given(st.lists(st.tuples(st.sampled_from(["authorization", "x"]), st.text(max_size=20))))
def test_bearer_token_never_raises_and_is_stripped(pairs: list[tuple[str, str]]) -> None:
    token = bearer_token(pairs)
    assert token is None or (token == token.strip() and token)


def test_identity_from_peercert_spells_the_subject_in_rfc_4514_order() -> None:
    cert = {
        "subject": (
            (("organizationName", "Shop, Inc"),),
            (("organizationalUnitName", "billing"),),
            (("commonName", "api"),),
        ),
        "subjectAltName": (("DNS", "api.shop"), ("URI", "spiffe://shop/billing")),
    }
    assert identity_from_peercert(cert) == (
        "CN=api,OU=billing,O=Shop\\, Inc",
        ("api.shop", "spiffe://shop/billing"),
    )
    assert identity_from_peercert(None) == (None, ())
    assert identity_from_peercert({}) == (None, ())
    assert AuthCode.UNAUTHENTICATED.http_status == 401
    assert AuthCode.PERMISSION_DENIED.http_status == 403
