"""Unit tests of target parsing and resolution (rpckit.client._discovery); no sockets, no DNS."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit.client._discovery import (
    Discovery,
    DnsTarget,
    StaticTarget,
    format_address,
    parse_target,
    parse_targets,
    system_resolver,
)

# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:50051", StaticTarget("127.0.0.1:50051")),
        ("inventory.internal:443", StaticTarget("inventory.internal:443")),
        ("[::1]:50051", StaticTarget("[::1]:50051")),
        ("dns:///inventory:50051", DnsTarget("inventory", 50051, "dns:///inventory:50051")),
        ("dns:inventory:50051", DnsTarget("inventory", 50051, "dns:inventory:50051")),
        ("dns:///[::1]:7", DnsTarget("::1", 7, "dns:///[::1]:7")),
    ],
)
def test_targets_parse(text: str, expected: object) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("127.0.0.1", "no port"),
        ("127.0.0.1:", "port must be 1-65535"),
        ("127.0.0.1:0", "port must be 1-65535"),
        ("127.0.0.1:70000", "port must be 1-65535"),
        ("host:http", "port must be 1-65535"),
        (":50051", "bad host"),
        ("my host:50051", "bad host"),
        ("::1:50051", "IPv6 address in brackets"),
        ("[127.0.0.1]:50051", "brackets are for IPv6"),
        ("[::1]50051", "malformed target"),
        ("dns:///inventory", "no port"),
        ("dns://8.8.8.8/inventory:53", "names a DNS server"),
        ("dns://inventory:53", "malformed target"),
        ("unix:///tmp/grpc.sock", "unsupported target"),
        ("ipv4:127.0.0.1:50051", "unsupported target"),
        ("https://example.test:443", "unsupported target"),
        ("", "no port"),
    ],
)
def test_malformed_targets_are_rejected_naming_them(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as info:
        parse_target(text)
    assert repr(text) in str(info.value)


def test_a_target_must_be_text() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        parse_target(50051)  # type: ignore[arg-type]


def test_a_single_string_is_one_target_and_repeats_are_dropped() -> None:
    assert parse_targets("127.0.0.1:1") == (StaticTarget("127.0.0.1:1"),)
    assert parse_targets(["127.0.0.1:1", "dns:///a:2", "127.0.0.1:1"]) == (
        StaticTarget("127.0.0.1:1"),
        DnsTarget("a", 2, "dns:///a:2"),
    )


def test_no_targets_is_an_error() -> None:
    with pytest.raises(ValueError, match="no targets"):
        parse_targets([])
    with pytest.raises(ValueError, match="no targets"):
        Discovery(())


@settings(deadline=None)
@given(port=st.integers(min_value=1, max_value=65535), v6=st.booleans())
def test_format_and_parse_round_trip(port: int, v6: bool) -> None:
    host = "2001:db8::7" if v6 else "10.0.0.7"
    address = format_address(host, port)
    assert parse_target(address) == StaticTarget(address)
    assert parse_target(f"dns:///{address}") == DnsTarget(host, port, f"dns:///{address}")


# ---------------------------------------------------------------- resolution


class FakeDns:
    """Answers from a table; an exception in the table is raised."""

    def __init__(self, table: dict[str, object]) -> None:
        self.table = table
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[tuple[str, int]]:
        self.asked.append((host, port))
        answer = self.table[host]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, list)
        return answer


def test_static_targets_need_no_resolver() -> None:
    dns = FakeDns({})
    discovery = Discovery(parse_targets(["10.0.0.1:1", "[::1]:2"]), dns)
    assert not discovery.dynamic
    assert discovery.static_addresses() == ("10.0.0.1:1", "[::1]:2")
    resolution = discovery.resolve()
    assert resolution.addresses == ("10.0.0.1:1", "[::1]:2")
    assert resolution.errors == ()
    assert dns.asked == []


def test_every_record_of_a_name_is_a_backend_statics_first_no_duplicates() -> None:
    dns = FakeDns({"inv": [("10.0.0.2", 50051), ("2001:db8::2", 50051), ("10.0.0.1", 50051)]})
    targets = parse_targets(["dns:///inv:50051", "10.0.0.1:50051"])
    discovery = Discovery(targets, dns)
    assert discovery.dynamic
    assert discovery.resolve().addresses == (
        "10.0.0.2:50051",
        "[2001:db8::2]:50051",
        "10.0.0.1:50051",
    )
    assert discovery.static_addresses() == ("10.0.0.1:50051",)
    assert dns.asked == [("inv", 50051)]


def test_a_failed_or_empty_answer_keeps_the_last_good_one() -> None:
    dns = FakeDns({"inv": [("10.0.0.1", 7)]})
    discovery = Discovery(parse_targets("dns:///inv:7"), dns)
    assert discovery.resolve().addresses == ("10.0.0.1:7",)

    dns.table["inv"] = OSError("SERVFAIL")
    failed = discovery.resolve()
    assert failed.addresses == ("10.0.0.1:7",)
    assert failed.errors == ("dns:///inv:7: OSError: SERVFAIL",)

    dns.table["inv"] = []
    empty = discovery.resolve()
    assert empty.addresses == ("10.0.0.1:7",)
    assert empty.errors == ("dns:///inv:7: resolved to no addresses",)

    dns.table["inv"] = [("10.0.0.2", 7), ("10.0.0.3", 7)]
    assert discovery.resolve().addresses == ("10.0.0.2:7", "10.0.0.3:7")


def test_a_name_that_never_resolved_contributes_nothing_and_says_why() -> None:
    dns = FakeDns({"gone": OSError("NXDOMAIN"), "ok": [("10.0.0.9", 1)]})
    discovery = Discovery(parse_targets(["dns:///gone:1", "dns:///ok:1"]), dns)
    resolution = discovery.resolve()
    assert resolution.addresses == ("10.0.0.9:1",)
    assert resolution.errors == ("dns:///gone:1: OSError: NXDOMAIN",)


def test_the_system_resolver_reads_address_literals_without_dns() -> None:
    assert system_resolver("127.0.0.1", 50051) == [("127.0.0.1", 50051)]
    assert format_address(*system_resolver("127.0.0.1", 9)[0]) == "127.0.0.1:9"
