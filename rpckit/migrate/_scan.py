"""``rpckit migrate scan``'s I/O: import the app, read samples and the last protos, write files.

Output under ``out`` (each file rewritten on every run)::

    out/protos/<package path>/<service>.proto   the annotated protos (proto_path = out/protos)
    out/<service>_servicer.py                    servicer stubs, one method per RPC
    out/test_<package>_contract.py               golden contract tests
    out/scan.json                                the report (what --json prints)

Field numbers survive re-runs: the protos already in ``out/protos`` are
compiled (grpcio-tools, with rpckit's include paths) and their numbers, and
integer types narrowed by review, are kept (:mod:`rpckit.migrate._plan`).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rpckit.migrate._flask_app import app_facts, legacy_routes, sample_matcher
from rpckit.migrate._load import LoadError, load_source
from rpckit.migrate._plan import PlanOptions, Previous, ScanPlan, camel, plan, samples_by_route
from rpckit.migrate._render import (
    render_contract_test,
    render_proto,
    render_report,
    render_stubs,
)
from rpckit.migrate._samples import read_samples

__all__ = ["ScanResult", "plan_as_dict", "previous_numbers", "scan", "write_outputs"]


@dataclasses.dataclass(frozen=True)
class ScanResult:
    plan: ScanPlan
    files: dict[str, str]  # relative path -> text
    report: str


def _default_package(app: Any, spec: str) -> str:
    module = spec.partition(":")[0].split(".")
    generic = {"app", "main", "wsgi", "application", "server", "__init__", "api", "factory"}
    words = [m for m in module if m not in generic] or [str(getattr(app, "name", "legacy"))]
    name = "".join(c if c.isalnum() else "_" for c in words[-1].lower())
    return f"{name}.v1"


def scan(
    spec: str,
    *,
    samples: Sequence[Path] = (),
    out: Path | None = None,
    package: str | None = None,
    split: str = "blueprint",
    strict_json: bool = False,
    gen_package: str = "",
    progress: Callable[[str], None] | None = None,
) -> ScanResult:
    """Scan the Flask app (or factory) ``spec``; nothing is written (see :func:`write_outputs`)."""
    say = progress or (lambda _: None)
    say(f"importing {spec}")
    source = load_source(spec)
    app = source.build()
    if not hasattr(app, "url_map") or not hasattr(app, "view_functions"):
        raise LoadError(f"{spec} gave a {type(app).__name__}, not a Flask app")
    routes = legacy_routes(app)
    say(f"read {len(routes)} rules from the URL map")
    exchanges = read_samples(list(samples))
    if samples:
        say(f"read {len(exchanges)} samples")
    grouped = samples_by_route(exchanges, sample_matcher(app))
    package = package or _default_package(app, spec)
    service = camel(package.split(".")[0])
    options = PlanOptions(
        package=package, app_service=service, split=split, strict_json=strict_json
    )
    previous = previous_numbers(out / "protos") if out is not None else {}
    if previous:
        say(f"keeping the field numbers of {len(previous)} messages from the last run")
    result = plan(routes, grouped, app_facts(app), options, previous)
    files: dict[str, str] = {}
    for file in result.files:
        files[f"protos/{file.path}"] = render_proto(file)
        stub = file.path.rsplit("/", 1)[-1].removesuffix(".proto")
        files[f"{stub}_servicer.py"] = render_stubs(result, file, gen_package=gen_package)
    if result.files:
        test_name = f"test_{package.split('.')[0]}_contract.py"
        files[test_name] = render_contract_test(
            result,
            gen_package=gen_package,
            legacy_app=spec,
            samples=[str(p) for p in samples],
        )
    files["scan.json"] = json.dumps(plan_as_dict(result), indent=2) + "\n"
    return ScanResult(result, files, render_report(result))


def write_outputs(result: ScanResult, out: Path) -> list[Path]:
    """Write every rendered file under ``out``; the paths written."""
    written = []
    for relative, text in sorted(result.files.items()):
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def plan_as_dict(result: ScanPlan) -> dict[str, Any]:
    """The ``--json`` report."""
    return {
        "routes": [
            {
                "method": r.method,
                "rule": r.rule,
                "endpoint": r.endpoint,
                "view": r.view,
                "rpc": f"{r.service}.{r.rpc}" if r.rpc else None,
                "blockers": list(r.blockers),
                "notes": list(r.notes),
                "sample_path": r.sample_path,
                "samples": r.samples,
            }
            for r in result.routes
        ],
        "protos": [f.path for f in result.files],
        "app_notes": list(result.app_notes),
        "error_renderer": result.error_renderer or None,
    }


def previous_numbers(proto_root: Path) -> Previous:
    """Message -> field -> (number, type) of the protos under ``proto_root`` (empty if none).

    ``ValueError`` when they exist but do not compile: fix or delete them first.
    """
    protos = sorted(p for p in proto_root.rglob("*.proto")) if proto_root.is_dir() else []
    if not protos:
        return {}
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    from rpckit.codegen._gen import include_paths

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "set.pb"
        args = [
            "protoc",
            f"-I{proto_root}",
            *(f"-I{p}" for p in include_paths()),
            f"--descriptor_set_out={out}",
            *(str(p.relative_to(proto_root)) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise ValueError(
                f"the protos under {proto_root} do not compile; fix them or delete them to "
                "start over (field numbers are then assigned anew)"
            )
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    types = {
        v: k.lower().removeprefix("type_")
        for k, v in descriptor_pb2.FieldDescriptorProto.Type.items()
    }
    numbers: dict[str, dict[str, tuple[int, str]]] = {}
    for file in files.file:
        for message in file.message_type:
            entry = {f.name: (f.number, types.get(f.type, "")) for f in message.field}
            for span in message.reserved_range:  # end is exclusive
                for number in range(span.start, min(span.end, span.start + 1000)):
                    entry[f"#{number}"] = (number, "reserved")
            for reserved_name in message.reserved_name:
                entry[reserved_name] = (-1, "reserved")
            numbers[message.name] = entry
    return numbers
