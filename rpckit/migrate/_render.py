"""``scan``'s text output from a :class:`~rpckit.migrate._plan.ScanPlan`: proto, stubs, tests. Pure.

Each ``render_*`` takes plan data and returns the text of one file; nothing
here reads or writes files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from rpckit.migrate._plan import EMPTY, Binding, ProtoFile, RouteReport, RpcSpec, ScanPlan

__all__ = ["render_contract_test", "render_proto", "render_report", "render_stubs"]

_WKT_MODULES = {
    "google.protobuf.Empty": ("google.protobuf", "empty_pb2", "Empty"),
    "google.protobuf.Value": ("google.protobuf", "struct_pb2", "Value"),
    "google.protobuf.Struct": ("google.protobuf", "struct_pb2", "Struct"),
    "google.protobuf.ListValue": ("google.protobuf", "struct_pb2", "ListValue"),
}


def _quote(text: str) -> str:
    return json.dumps(text)


def render_proto(file: ProtoFile) -> str:
    """The ``.proto`` text of one planned file."""
    service = file.service
    lines = [
        "// Written by `rpckit migrate scan`. Review it before implementing (migrate/README.md):",
        "// names, integer widths, which routes move. Re-running scan keeps field numbers and",
        "// integer types narrowed by review, and reserves the numbers of removed fields.",
        'syntax = "proto3";',
        "",
        f"package {file.package};",
        "",
    ]
    lines += [f'import "{path}";' for path in file.imports]
    lines.append("")
    lines += [f"// {c}" for c in service.comment]
    lines.append(f"service {service.name} {{")
    defaults = []
    if service.strict_json:
        defaults.append("    json { unknown_fields: REJECT_UNKNOWN strict_types: true }")
    if service.max_body_bytes:
        defaults.append(f"    max_body_bytes: {service.max_body_bytes}")
    if defaults:
        lines += ["  option (rpckit.v1.http_defaults) = {", *defaults, "  };"]
    for rpc in service.rpcs:
        lines += _rpc_lines(rpc)
    lines.append("}")
    for message in file.messages:
        lines.append("")
        if message.comment:
            lines.append(f"// {message.comment}")
        lines.append(f"message {message.name} {{")
        if message.reserved_numbers:
            lines.append("  reserved " + ", ".join(str(n) for n in message.reserved_numbers) + ";")
            lines.append("  reserved " + ", ".join(_quote(n) for n in message.reserved_names) + ";")
        for field in message.fields:
            label = f"{field.label} " if field.label else ""
            comment = f"  // {field.comment}" if field.comment else ""
            lines.append(f"  {label}{field.type} {field.name} = {field.number};{comment}")
        lines.append("}")
    return "\n".join(lines) + "\n"


def _rpc_lines(rpc: RpcSpec) -> list[str]:
    lines = [f"  // {c}" for c in rpc.comment]
    lines.append(f"  rpc {rpc.name}({rpc.request}) returns ({rpc.response}) {{")
    if rpc.idempotency:
        lines.append(f"    option idempotency_level = {rpc.idempotency};")
    first, *more = rpc.bindings
    lines.append("    option (google.api.http) = {")
    lines += [f"      {part}" for part in _binding_parts(first)]
    for binding in more:
        lines.append("      additional_bindings { " + " ".join(_binding_parts(binding)) + " }")
    lines.append("    };")
    http = []
    if rpc.success_status != 200:
        http.append(f"success_status: {rpc.success_status}")
    for name, value in rpc.response_headers:
        http.append(f"response_headers {{ name: {_quote(name)} value: {_quote(value)} }}")
    if http:
        lines.append("    option (rpckit.v1.http) = { " + " ".join(http) + " };")
    lines.append("  }")
    return lines


def _binding_parts(binding: Binding) -> list[str]:
    method, path = binding.method, binding.path
    if method in ("get", "post", "put", "patch", "delete"):
        parts = [f"{method}: {_quote(path)}"]
    else:
        parts = [f"custom {{ kind: {_quote(method.upper())} path: {_quote(path)} }}"]
    if binding.body:
        parts.append(f"body: {_quote(binding.body)}")
    if binding.response_body:
        parts.append(f"response_body: {_quote(binding.response_body)}")
    return parts


def _module_of(file: ProtoFile) -> str:
    return file.path.rsplit("/", 1)[-1].removesuffix(".proto") + "_pb2"


def _python_type(name: str, files: Sequence[ProtoFile], here: ProtoFile) -> str:
    if name in _WKT_MODULES:
        return f"{_WKT_MODULES[name][1]}.{_WKT_MODULES[name][2]}"
    for file in files:
        if any(m.name == name for m in file.messages):
            return f"{_module_of(file)}.{name}"
    return f"{_module_of(here)}.{name}"


def render_stubs(plan: ScanPlan, file: ProtoFile, *, gen_package: str) -> str:
    """A servicer module for ``file``'s service: one method per RPC, each naming its Flask view."""
    service = file.service
    package_path = file.package
    base = f"{gen_package}.{package_path}" if gen_package else package_path
    modules = {_module_of(f) for f in plan.files}
    wkts = sorted(
        {_WKT_MODULES[t][1] for rpc in service.rpcs for t in (rpc.response,) if t in _WKT_MODULES}
    )
    lines = [
        f'"""Servicer stubs for {file.package}.{service.name}, written by `rpckit migrate scan`.',
        "",
        "Copy this file into your service and fill the methods in. A method left as it is",
        "answers UNIMPLEMENTED: keep its routes on the Flask fallback until it is done",
        "(``RouteOptions(rollout_percent=0)``, see migrate/README.md).",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import grpc",
    ]
    if wkts:
        lines.append("from google.protobuf import " + ", ".join(wkts))
    lines.append("")
    for module in sorted(modules):
        lines.append(f"from {base} import {module}")
    lines.append(f"from {base} import {_module_of(file)}_grpc")
    lines += ["", "", f"class {service.name}({_module_of(file)}_grpc.{service.name}Servicer):"]
    lines.append(
        f'    """{file.package}.{service.name}: the Flask views it replaces are named below."""'
    )
    reports = {r.rpc: r for r in plan.routes if r.service == service.name}
    for rpc in service.rpcs:
        request = _python_type(rpc.request, plan.files, file)
        response = _python_type(rpc.response, plan.files, file)
        report = reports.get(rpc.name)
        was = f"{report.method} {report.rule}: was {report.view}" if report else rpc.name
        not_yet = _quote(f"{rpc.name} is not migrated yet")
        lines += [
            "",
            f"    def {rpc.name}(",
            f"        self, request: {request}, context: grpc.ServicerContext",
            f"    ) -> {response}:",
            f'        """{was}."""',
            f"        context.abort(grpc.StatusCode.UNIMPLEMENTED, {not_yet})",
        ]
    return "\n".join(lines) + "\n"


#: The first line of the contract test's replay test (left out when there are no samples).
_REPLAY_TEST_MARK = (
    '@pytest.mark.skipif(not all(p.exists() for p in SAMPLES), reason="no samples recorded")'
)


def render_contract_test(
    plan: ScanPlan,
    *,
    gen_package: str,
    legacy_app: str,
    samples: Sequence[str],
) -> str:
    """A pytest module: scanned legacy URLs route to their RPCs; samples replay to their answers."""
    base_modules = []
    services = []
    for file in plan.files:
        base = f"{gen_package}.{file.package}" if gen_package else file.package
        base_modules.append(f"from {base} import {_module_of(file)}")
        services.append(
            f"{_module_of(file)}.DESCRIPTOR.services_by_name[{_quote(file.service.name)}]"
        )
    cases = [
        (r.method, r.sample_path, f"/{_package_of(plan, r)}.{r.service}/{r.rpc}")
        for r in plan.routes
        if r.rpc
    ]
    lines = [
        '"""Golden contract tests written by `rpckit migrate scan`.',
        "",
        "1. Every legacy URL scan saw (path values from the samples, or made up per",
        "   converter) is routed by the shim to the RPC scan proposed for it.",
        "2. The recorded samples replay, in order, to the recorded status and body against",
        "   APP_UNDER_TEST: the legacy app by default; point RPCKIT_CONTRACT_APP at a stage",
        "   (MODULE:FACTORY) to hold the migrated service to the same answers.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import os",
        "from pathlib import Path",
        "",
        "import grpc",
        "import pytest",
        "",
        "from rpckit.http import Shim",
        "from rpckit.migrate.testing import replay_recorded",
        *sorted(base_modules),
        "",
        f"LEGACY_APP = {_quote(legacy_app)}",
        'APP_UNDER_TEST = os.environ.get("RPCKIT_CONTRACT_APP", LEGACY_APP)',
        "SAMPLES = [Path(p) for p in " + json.dumps(list(samples)) + "]",
        "",
        "#: (HTTP method, legacy path, the RPC it must reach)",
        "LEGACY_URLS = [",
        *[f"    ({_quote(m)}, {_quote(p)}, {_quote(rpc)})," for m, p, rpc in cases],
        "]",
        "",
        "",
        '@pytest.fixture(scope="module")',
        "def router() -> object:",
        '    channel = grpc.insecure_channel("127.0.0.1:9")  # never connected: routing only',
        "    services = [",
        *[f"        {s}," for s in services],
        "    ]",
        "    yield Shim(services=services, channel=channel).router",
        "    channel.close()",
        "",
        "",
        '@pytest.mark.parametrize(("method", "path", "rpc"), LEGACY_URLS)',
        "def test_legacy_url_reaches_its_rpc("
        "router: object, method: str, path: str, rpc: str) -> None:",
        "    resolution = router.resolve(method, path)  # type: ignore[attr-defined]",
        '    route = getattr(resolution, "route", None)',
        '    assert route is not None, f"{method} {path}: {resolution}"',
        "    assert route.grpc_method == rpc",
        "",
        "",
        _REPLAY_TEST_MARK,
        "def test_recorded_samples_replay_to_their_answers() -> None:",
        "    report = replay_recorded(SAMPLES, APP_UNDER_TEST)",
        "    assert report.ok, report.render_text()",
        "",
    ]
    if not samples:
        lines = lines[: lines.index(_REPLAY_TEST_MARK)]
    return "\n".join(lines).rstrip("\n") + "\n"


def _package_of(plan: ScanPlan, report: RouteReport) -> str:
    for file in plan.files:
        if file.service.name == report.service:
            return file.package
    return ""


def render_report(plan: ScanPlan) -> str:
    """The terminal report: every route, its RPC or its blockers, then notes and next steps."""
    lines = []
    width = max((len(f"{r.method} {r.rule}") for r in plan.routes), default=10)
    for report in plan.routes:
        head = f"{report.method} {report.rule}"
        if report.rpc:
            lines.append(f"{head:<{width}}  -> {report.service}.{report.rpc}")
        else:
            lines.append(f"{head:<{width}}  stays on the fallback: {'; '.join(report.blockers)}")
        lines += [f"{'':<{width}}     note: {n}" for n in report.notes]
    moved = sum(1 for r in plan.routes if r.rpc)
    lines.append("")
    lines.append(f"{moved} of {len(plan.routes)} routes get an RPC")
    for note in plan.app_notes:
        lines.append(f"app: {note}")
    if plan.error_renderer:
        lines.append(
            f"errors: the samples' error bodies are what rpckit.http.{plan.error_renderer} "
            f"renders: ShimConfig(error_renderer={plan.error_renderer})"
        )
    return "\n".join(lines) + "\n"


def response_is_empty(rpc: RpcSpec) -> bool:
    return rpc.response == EMPTY
