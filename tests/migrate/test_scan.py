"""scan on real Flask apps: the report, blockers, and generated protos that compile and route."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from rpckit.cli._main import main as rpckit_main
from rpckit.http import Shim
from rpckit.migrate._load import LoadError
from rpckit.migrate._scan import scan, write_outputs

SAMPLES = Path(__file__).resolve().parents[2] / "migrate" / "example" / "samples.jsonl"


def _generate_and_route(tmp_path: Path, spec: str, package: str, **kwargs: object) -> list[str]:
    """Scan, write, `rpckit gen`, import the code, and route every legacy URL; the misses."""
    out = tmp_path / "scan"
    gen_package = f"gen_{package.split('.', maxsplit=1)[0]}"
    result = scan(spec, out=out, package=package, gen_package=gen_package, **kwargs)  # type: ignore[arg-type]
    write_outputs(result, out)
    (tmp_path / "pyproject.toml").write_text(
        "[[tool.rpckit.gen]]\n"
        f'proto_path = "scan/protos"\nprotos = ["scan/protos"]\nout = "{gen_package}"\n',
        encoding="utf-8",
    )
    gen = subprocess.run(
        [str(Path(sys.executable).parent / "rpckit"), "gen", "--project", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        services = []
        for file in result.plan.files:
            module_name = f"{gen_package}.{file.package}.{file.path.rsplit('/', 1)[-1][:-6]}_pb2"
            module = importlib.import_module(module_name)
            services.append(module.DESCRIPTOR.services_by_name[file.service.name])
        with grpc.insecure_channel("127.0.0.1:9") as channel:  # never connected: routing only
            router = Shim(services=services, channel=channel).router
            misses = []
            for report in result.plan.routes:
                if not report.rpc:
                    continue
                resolution = router.resolve(report.method, report.sample_path)
                route = getattr(resolution, "route", None)
                want = f"/{package}.{report.service}/{report.rpc}"
                if route is None or route.grpc_method != want:
                    misses.append(f"{report.method} {report.sample_path}: {resolution} != {want}")
            assert sum(1 for r in result.plan.routes if r.rpc) > 0
            return misses
    finally:
        sys.path.remove(str(tmp_path))


def test_example_app_every_json_route_gets_an_rpc_that_compiles_and_routes(tmp_path: Path) -> None:
    result = scan(
        "examples.legacy_inventory.app:create_app", samples=[SAMPLES], package="scanned_a.v1"
    )
    assert [r.blockers for r in result.plan.routes] == [()] * 9
    assert len({r.rpc for r in result.plan.routes}) == 9
    assert result.plan.error_renderer == "render_error_object"
    misses = _generate_and_route(
        tmp_path,
        "examples.legacy_inventory.app:create_app",
        "scanned_b.v1",
        samples=[SAMPLES],
        strict_json=True,
    )
    assert misses == []


def test_example_proto_reproduces_the_legacy_contract_details() -> None:
    result = scan(
        "examples.legacy_inventory.app:create_app", samples=[SAMPLES], package="scanned_c.v1",
        strict_json=True,
    )  # fmt: skip
    proto = result.files["protos/scanned_c/v1/scanned_c.proto"]
    assert 'put: "/items/{item.sku}"' in proto
    assert 'body: "item"' in proto
    assert (
        'success_status: 201 response_headers { name: "Location" value: "/items/{sku}" }' in proto
    )
    assert "rpc DeleteItem(DeleteItemRequest) returns (google.protobuf.Empty)" in proto
    assert 'response_body: "items"' in proto  # GET /items/<sku>/tags: a top-level array
    assert "map<string, ByTag> by_tag" in proto  # keys like "(untagged)" are data
    assert "max_body_bytes: 65536" in proto  # from MAX_CONTENT_LENGTH
    assert proto.count("option idempotency_level = NO_SIDE_EFFECTS;") == 5  # every GET


def test_fixture_shop_app_scans_compiles_and_routes(tmp_path: Path) -> None:
    misses = _generate_and_route(
        tmp_path, "tests.migrate.fixture_apps:create_shop_app", "shopfx.v1"
    )
    assert misses == []


def test_fixture_shop_app_report(tmp_path: Path) -> None:
    result = scan("tests.migrate.fixture_apps:create_shop_app", package="shopfx2.v1")
    by_rule = {(r.method, r.rule): r for r in result.plan.routes}
    assert by_rule[("GET", "/shop/report/<uuid:rid>.csv")].blockers  # a variable inside a segment
    assert any("own converter" in n for n in by_rule[("GET", "/shop/products/<sku:sku>")].notes)
    assert by_rule[("GET", "/shop/products")].rpc == "ListProducts"
    assert by_rule[("POST", "/shop/products")].rpc == "CreateProducts"
    shop = result.files["protos/shopfx2/v1/shop.proto"]
    assert 'get: "/shop/files/{name=**}"' in shop
    assert "int64 order_id = 1;" in shop
    app_proto = result.files["protos/shopfx2/v1/shopfx2.proto"]
    assert 'additional_bindings { get: "/pages/{page}"' in app_proto
    assert any("404 NotFound" in n for n in result.plan.app_notes)


def test_fixture_portal_app_reports_blockers_and_uses_type_hints(tmp_path: Path) -> None:
    result = scan("tests.migrate.fixture_apps:create_portal_app", package="portalfx.v1")
    blockers = {r.rule: r.blockers for r in result.plan.routes if r.blockers}
    assert blockers == {
        "/": ("html: render_template_string",),
        "/login": ("form: request.form",),
        "/events": ("streaming: Response(generate(...))",),
        "/upload": ("multipart: request.files",),
    }
    users = result.files["protos/portalfx/v1/users.proto"]
    assert "int64 id = 1;" in users
    assert "google.protobuf.Value email" in users
    assert "bool admin" in users  # the dataclass body hint
    assert (
        _generate_and_route(
            tmp_path, "tests.migrate.fixture_apps:create_portal_app", "portalfx2.v1"
        )
        == []
    )


def test_marshmallow_blog_app_scans_its_schemas_compiles_and_routes(tmp_path: Path) -> None:
    result = scan("tests.migrate.fixture_blog:create_blog_app", package="blogfx.v1")
    notes = {r.rpc: r.notes for r in result.plan.routes}
    assert "request body shape from the marshmallow schema PostSchema" in notes["CreatePost"]
    assert "response shape from the marshmallow schema PostSchema" in notes["ListPosts"]
    assert "response shape from the marshmallow schema AuthorSchema" in notes["PostAuthor"]
    assert "response shape from the marshmallow schema PostSchema" in notes["GetPost"]
    assert not any("marshmallow" in n for n in notes["Sign"])  # json.loads, an unbuildable schema
    proto = result.files["protos/blogfx/v1/posts.proto"]
    create = proto[proto.index("message CreatePostRequest {") :].split("}", 1)[0]
    assert "string content = 2;" in create  # data_key
    assert "optional string edit_token" in create  # load_only: in the request only
    assert " id = " not in create  # dump_only: in the response only
    assert "map<string, int64> views" in create
    assert "rpc ListPosts(ListPostsRequest) returns (ListPostsResponse)" in proto
    assert 'response_body: "items"' in proto  # PostSchema(many=True): a top-level array
    assert "message Author {\n  int64 id = 1;\n  string name = 2;\n}" in proto
    assert "google.protobuf.Value parent" in proto  # nested in itself
    misses = _generate_and_route(
        tmp_path, "tests.migrate.fixture_blog:create_blog_app", "blogfx2.v1"
    )
    assert misses == []


def test_factory_that_raises_is_a_clear_error() -> None:
    with pytest.raises(LoadError, match=r"create_broken_app\(\) raised RuntimeError: DATABASE_URL"):
        scan("tests.migrate.fixture_apps:create_broken_app")


def test_cli_scan_factory_that_raises_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert rpckit_main(["migrate", "scan", "tests.migrate.fixture_apps:create_broken_app"]) == 2
    assert "DATABASE_URL is not set" in capsys.readouterr().err


def test_rerun_keeps_field_numbers_and_reviewed_types(tmp_path: Path) -> None:
    spec = "examples.legacy_inventory.app:create_app"
    out = tmp_path / "scan"
    write_outputs(scan(spec, samples=[SAMPLES], out=out, package="rerun.v1"), out)
    proto = out / "protos/rerun/v1/rerun.proto"
    text = proto.read_text(encoding="utf-8")
    text = text.replace("optional int64 page_size = 2;", "optional int32 page_size = 2;")
    text = text.replace(
        "  optional string colour = 3;  // query parameter\n",
        '  reserved 3;\n  reserved "colour";\n',
    )
    text = text.replace("  string name = 2;\n", "")  # a field removed by review: reserved on re-run
    proto.write_text(text, encoding="utf-8")
    write_outputs(scan(spec, samples=[SAMPLES], out=out, package="rerun.v1"), out)
    again = proto.read_text(encoding="utf-8")
    assert "optional int32 page_size = 2;" in again
    assert "colour" not in again.replace('reserved "colour";', "")
    assert "string sku = 1;" in again
    assert "int64 quantity = 3;" in again
    assert "string name = 6;" in again  # back from the samples, under a new number
