"""Rendering templates, in memory: rpckit's own template, and templates that are wrong."""

from __future__ import annotations

import glob
import tomllib
from pathlib import Path

import pytest

import rpckit
from rpckit.scaffold._answers import Answers
from rpckit.scaffold._command import default_rpckit_requirement
from rpckit.scaffold._render import Facts, RenderedFile, context, render, with_extras
from rpckit.scaffold._template import (
    TemplateError,
    TemplateSource,
    builtin_template,
    load_template,
    parse_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "rpckit" / "scaffold" / "templates"
FACTS = Facts(
    rpckit_version="0.1.0",
    drain_s=rpckit.ServerConfig().drain_s,
    grace_s=rpckit.ServerConfig().grace_s,
)


def render_builtin(
    name: str = "order-service", *, package: str | None = None, http: bool = True
) -> dict[str, RenderedFile]:
    answers = Answers.from_inputs(
        name, package=package, http=http, rpckit="rpckit==0.1.0", python="3.11"
    )
    template = load_template(builtin_template())
    return render(template, context(answers, FACTS, template_version=template.version))


def test_the_builtin_template_renders_a_whole_project() -> None:
    files = render_builtin("order-service", package="orders")
    assert {
        "pyproject.toml",
        "README.md",
        "Dockerfile",
        ".dockerignore",
        ".gitignore",
        ".ci/run",
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/service.yaml",
        "protos/orders/v1/order_service.proto",
        "orders/__init__.py",
        "orders/service.py",
        "orders/server.py",
        "orders/client.py",
        "orders/config.py",
        "orders/store.py",
        "orders/demo.py",
        "tests/conftest.py",
        "tests/test_service.py",
        "tests/test_http.py",
        "tests/test_serve.py",
    } <= set(files)
    assert [path for path, file in files.items() if file.executable] == [".ci/run"]
    assert not any(path.endswith(".jinja") for path in files)
    pyproject = tomllib.loads(files["pyproject.toml"].text)
    assert pyproject["project"]["dependencies"] == ["rpckit[http,metrics]==0.1.0"]
    assert pyproject["tool"]["rpckit"]["gen"] == [
        {"proto_path": "protos", "protos": ["protos/orders/v1"], "out": "orders/_gen"}
    ]


def test_no_http_drops_the_shim_and_its_tests() -> None:
    files = render_builtin("orders", http=False)
    assert "tests/test_http.py" not in files
    assert "http_app" not in files["orders/server.py"].text
    assert "8080" not in files["Dockerfile"].text
    assert "rpckit[metrics]==0.1.0" in files["pyproject.toml"].text
    assert "orders-http" not in files["deploy/kubernetes/service.yaml"].text


def test_every_template_file_is_rendered_by_some_answers() -> None:
    template = load_template(builtin_template())
    sources = set(template.files) - template.partials
    with_http, without = render_builtin("orders"), render_builtin("orders", http=False)
    assert len(set(with_http) | set(without)) == len(sources)


def test_the_proto_has_the_resource_methods_with_http_rules_and_idempotency() -> None:
    proto = render_builtin("orders")["protos/orders/v1/orders.proto"].text
    for method in ("GetItem", "ListItems", "CreateItem", "UpdateItem", "DeleteItem"):
        assert f"rpc {method}(" in proto
    assert proto.count("option (google.api.http)") == 5
    assert proto.count("idempotency_level = NO_SIDE_EFFECTS") == 2
    assert proto.count("idempotency_level = IDEMPOTENT") == 2
    assert "page_token" in proto
    assert "next_page_token" in proto


def test_package_data_ships_every_template_file() -> None:
    """pyproject's package-data globs (as setuptools expands them) cover the template tree."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["rpckit"]
    shipped = {
        path
        for pattern in patterns
        for path in glob.glob(pattern, root_dir=ROOT / "rpckit", recursive=True)
        if path.startswith("scaffold/templates/")
    }
    on_disk = {
        str(path.relative_to(ROOT / "rpckit"))
        for path in TEMPLATES.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert shipped == on_disk


def test_the_default_rpckit_is_a_checkout_by_path_or_a_release_by_version(tmp_path: Path) -> None:
    assert default_rpckit_requirement(ROOT / "rpckit") == f"rpckit @ {ROOT.as_uri()}"
    installed = tmp_path / "site-packages" / "rpckit"
    installed.mkdir(parents=True)
    assert default_rpckit_requirement(installed).startswith("rpckit==")
    (tmp_path / "site-packages" / "pyproject.toml").write_text('[project]\nname = "other"\n')
    assert default_rpckit_requirement(installed).startswith("rpckit==")


@pytest.mark.parametrize(
    ("requirement", "extras", "expected"),
    [
        ("rpckit==0.1.0", ("http",), "rpckit[http]==0.1.0"),
        ("rpckit @ file:///src/rpckit", ("http", "metrics"), "rpckit[http,metrics] @ file:///src/rpckit"),
        ("rpckit", ("new",), "rpckit[new]"),
        ("rpckit>=0.1", (), "rpckit>=0.1"),
    ],
)  # fmt: skip
def test_with_extras(requirement: str, extras: tuple[str, ...], expected: str) -> None:
    assert with_extras(requirement, extras) == expected


# ---------------------------------------------------------------- templates that are wrong


def template(files: dict[str, str], manifest: str = "version = 1\n") -> TemplateSource:
    return parse_manifest(manifest, files)


def test_an_unknown_variable_is_an_error_naming_file_and_line() -> None:
    bad = template({"a.txt.jinja": "fine\n{{ nmae }}\n"})
    with pytest.raises(TemplateError, match=r"a\.txt\.jinja:2: 'nmae' is undefined"):
        render(bad, {"name": "x"})


def test_a_syntax_error_is_an_error_naming_the_file() -> None:
    with pytest.raises(TemplateError, match=r"a\.txt\.jinja:1"):
        render(template({"a.txt.jinja": "{% if %}\n"}), {})


@pytest.mark.parametrize(
    "path", ["../escape.txt.jinja", "/abs.txt.jinja", "{{ empty }}.jinja", ".rpckit/x.jinja"]
)
def test_a_path_outside_the_project_is_refused(path: str) -> None:
    with pytest.raises(TemplateError, match="not a path inside the project"):
        render(template({path: "x"}), {"empty": ""})


def test_two_files_rendering_to_one_path_are_refused() -> None:
    clash = template({"{{ a }}.txt.jinja": "1", "{{ b }}.txt.jinja": "2"})
    with pytest.raises(TemplateError, match="as another template file does"):
        render(clash, {"a": "same", "b": "same"})


@pytest.mark.parametrize(
    ("manifest", "files", "message"),
    [
        ("", {"a.jinja": ""}, "lacks version"),
        ("version = 0", {"a.jinja": ""}, "version must be an integer >= 1"),
        ("version = true", {"a.jinja": ""}, "version must be an integer >= 1"),
        ("version = 1\nexecutable = ['run.jinja']", {"a.jinja": ""}, "names 'run.jinja'"),
        ("version = 1", {"a.txt": ""}, "end in .jinja"),
        ("version = [", {}, "template.toml"),
    ],
)
def test_a_bad_manifest_is_named(manifest: str, files: dict[str, str], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        parse_manifest(manifest, files)


def test_a_condition_that_is_no_answer_is_an_error() -> None:
    conditional = template({"a.jinja": "x"}, "version = 1\n[when]\nhtpp = ['a.jinja']\n")
    with pytest.raises(TemplateError, match="'htpp' is not an answer"):
        render(conditional, {"http": True})


def test_a_folder_without_a_manifest_is_no_template(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"no template\.toml"):
        load_template(tmp_path)
