"""rpckit new's inputs: names derived and checked, requirements on rpckit, the answers file."""

from __future__ import annotations

import ast
import builtins
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpckit.scaffold._answers import (
    _PROTO_MESSAGES,
    _TEMPLATE_NAMES,
    MAX_NAME,
    Answers,
    AnswersError,
    Recorded,
    answers_toml,
    parse_answers_toml,
    rpckit_requirement,
)
from rpckit.scaffold._render import Facts, context, render
from rpckit.scaffold._template import builtin_template, load_template


def answers(name: str, package: str | None = None, *, http: bool = True) -> Answers:
    return Answers.from_inputs(name, package=package, http=http, rpckit="rpckit", python="3.11")


def test_every_name_comes_from_name_and_package() -> None:
    made = answers("Order_Service", "orders")
    assert made.name == "order-service"
    assert (made.package, made.proto_stem) == ("orders", "order_service")
    assert (made.service, made.proto_package, made.env_prefix) == (
        "OrderService",
        "orders.v1",
        "ORDERS_",
    )
    plain = answers("inventory")
    assert (plain.package, plain.service) == ("inventory", "Inventory")


def test_a_service_named_like_a_message_of_the_proto_gets_a_suffix() -> None:
    assert answers("item").service == "ItemService"
    assert answers("list-items-request", "lir").service == "ListItemsRequestService"


@pytest.mark.parametrize(
    ("name", "package", "message"),
    [
        ("2fast", None, "not an identifier"),
        ("2fast", "fast", "not an identifier"),  # the proto file would be 2fast.proto
        ("my service!", None, "not an identifier"),
        ("über", None, "not an identifier"),
        ("---", None, "not an identifier"),
        ("", None, "not an identifier"),
        ("class", None, "is a Python keyword"),
        ("json", None, "would shadow the standard library's json"),
        ("orders", "grpc", "would shadow grpc"),
        ("tests", None, "would shadow tests"),
        ("orders", "Orders!", "not a Python package name"),
        ("x" * (MAX_NAME + 1), None, "at most 32"),
        ("orders", "p" * (MAX_NAME + 1), "longer than 32"),
    ],
)
def test_bad_names_say_what_is_wrong(name: str, package: str | None, message: str) -> None:
    with pytest.raises(AnswersError, match=message):
        answers(name, package)


def test_a_bad_derived_package_suggests_the_package_option() -> None:
    with pytest.raises(AnswersError, match="pass --package"):
        answers("json")


@given(st.text(max_size=40))
def test_any_name_is_accepted_or_refused_with_an_answers_error(name: str) -> None:
    try:
        made = answers(name)
    except AnswersError as exc:
        message = str(exc)
    else:
        message = ""
        assert made.package.isidentifier()
        assert made.proto_stem.isidentifier()
        assert made.service.isidentifier()
        assert len(made.name) <= MAX_NAME
    assert "\n" not in message


@pytest.mark.parametrize(
    ("spec", "requirement"),
    [
        ("0.2.0", "rpckit==0.2.0"),
        ("rpckit>=0.1,<0.2", "rpckit>=0.1,<0.2"),
        ("rpckit", "rpckit"),
        ("RPCKit == 1.0", "rpckit== 1.0"),
        ("rpckit @ https://example.org/rpckit-0.1.0.tar.gz", "rpckit @ https://example.org/rpckit-0.1.0.tar.gz"),
        ("file:///src/rpckit", "rpckit @ file:///src/rpckit"),
    ],
)  # fmt: skip
def test_rpckit_specs_become_requirements(spec: str, requirement: str) -> None:
    assert rpckit_requirement(spec) == requirement


@pytest.mark.parametrize("spec", ["flask", "rpckit[http]>=0.1", "rpckitx", "rpckit latest", ""])
def test_other_specs_are_refused(spec: str) -> None:
    with pytest.raises(AnswersError, match="--rpckit"):
        rpckit_requirement(spec)


def test_the_answers_file_reads_back_what_was_written() -> None:
    recorded = Recorded(
        answers=dataclasses.replace(answers("orders", "o", http=False), rpckit_pinned=True),
        template_version=3,
        template_source='/tmp/a "quoted" \\ path',
        rendered_by="0.1.0",
    )  # fmt: skip
    text = answers_toml(recorded)
    assert text.startswith("# Written by `rpckit new`")
    assert parse_answers_toml(text) == recorded


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not toml [", "not valid TOML"),
        ("[template]\nversion = 1\nsource = 'rpckit'\n", "lacks 'answers'"),
        (
            "[template]\nversion = 'one'\nsource = 'rpckit'\n[answers]\nname = 'a'\n"
            "package = 'a'\nhttp = true\nrpckit = 'rpckit'\npython = '3.11'\n",
            "template.version must be an integer",
        ),
        (
            "[template]\nversion = 1\nsource = 'rpckit'\n[answers]\nname = 'a'\n"
            "package = 'json'\nhttp = true\nrpckit = 'rpckit'\npython = '3.11'\n",
            "standard library",
        ),
    ],
)
def test_a_damaged_answers_file_is_named(text: str, message: str) -> None:
    with pytest.raises(AnswersError, match=message):
        parse_answers_toml(text)


@pytest.mark.parametrize(
    ("name", "service"),
    [("true", "TrueService"), ("key-error", "KeyErrorService"), ("settings", "SettingsService")],
)
def test_a_service_named_like_a_keyword_builtin_or_template_name_gets_a_suffix(
    name: str, service: str
) -> None:
    assert answers(name, "pkg").service == service


def test_the_names_the_template_uses_are_all_known() -> None:
    """Every capitalised name in the rendered Python is one a service may not take."""
    made = answers("orders")
    template = load_template(builtin_template())
    facts = Facts(rpckit_version="0", drain_s=2.0, grace_s=10.0)
    files = render(template, context(made, facts, template_version=template.version))
    used: set[str] = set()
    for path, file in files.items():
        if path.endswith(".py"):
            for node in ast.walk(ast.parse(file.text)):
                if isinstance(node, ast.Name):
                    used.add(node.id)
                elif isinstance(node, ast.alias):
                    used.add(node.asname or node.name.split(".")[0])
                elif isinstance(node, ast.ClassDef | ast.FunctionDef):
                    used.add(node.name)
    capitalised = {name for name in used if name[:1].isupper()} - {made.service}
    known = _TEMPLATE_NAMES | _PROTO_MESSAGES | set(dir(builtins))
    assert capitalised - known == set()
    assert _TEMPLATE_NAMES - capitalised == set()  # no stale entries either
