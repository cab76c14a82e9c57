"""``rpckit migrate``: the command-line verbs (scan, record, diff, status) of :mod:`rpckit.migrate`.

Registered by ``rpckit.cli._main`` with :func:`add_parser`. Importing this module
loads neither Flask nor grpc; each verb imports what it needs when it runs.
Bad input is one line on stderr and exit status 2; ``diff`` exits 1 when it
finds differences.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]

EXIT_USAGE = 2
_INSTALL = "pip install 'rpckit[migrate]'"


def add_parser(verbs: Any) -> None:
    """Add ``migrate`` and its verbs to ``rpckit``'s subparsers."""
    migrate = verbs.add_parser(
        "migrate",
        help="move a Flask app to rpckit: scan it into protos, record and diff traffic, watch it",
        description=(
            "Tools for moving a Flask JSON app to rpckit route by route; the playbook is "
            "migrate/README.md. Needs Flask: " + _INSTALL + "."
        ),
        epilog=(
            "example: rpckit migrate scan myapp:create_app --samples samples.jsonl --out migration"
        ),
    )
    steps = migrate.add_subparsers(dest="migrate_verb", metavar="STEP", parser_class=type(migrate))
    steps.required = True
    _scan_parser(steps)
    _record_parser(steps)
    _diff_parser(steps)
    _status_parser(steps)


def _fail(verb: str, message: str) -> int:
    print(f"rpckit migrate {verb}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _needs_flask(verb: str) -> str | None:
    try:
        import flask  # noqa: F401 - only checking that it is there
    except ImportError:
        return f"this needs Flask and Werkzeug: {_INSTALL}"
    return None


def _progress(label: str) -> Any:
    """A stderr progress printer for ``(done, total)``: a line every 10% and at the end."""
    state = {"shown": -1}

    def show(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth != state["shown"] or done == total:
            state["shown"] = tenth
            print(f"{label}: {done}/{total}", file=sys.stderr, flush=True)

    return show


# ---------------------------------------------------------------- scan


def _scan_parser(steps: Any) -> None:
    scan = steps.add_parser(
        "scan",
        help="read a Flask app's URL map and write annotated protos, servicer stubs and tests",
        description=(
            "Import the Flask app (or call the factory) APP, read its URL map and views, and "
            "report every route with the RPC proposed for it or why it stays on the fallback "
            "(HTML, form or multipart bodies, streaming, file downloads). With --out, write "
            "OUT/protos/<package>/<service>.proto (google.api.http rules that reproduce each "
            "path; messages from type hints, marshmallow schemas and --samples, else "
            "google.protobuf.Value), servicer stubs, golden contract tests and scan.json. "
            "Field numbers are kept across runs."
        ),
        epilog=(
            "example: rpckit migrate scan examples.legacy_inventory.app:create_app "
            "--samples migrate/example/samples.jsonl --package inventory_legacy.v1 --strict-json "
            "--out migrate/example/scan"
        ),
    )
    scan.add_argument("app", metavar="MODULE:APP_OR_FACTORY", help="the Flask app or its factory")
    scan.add_argument(
        "--samples", type=Path, action="append", default=[], metavar="JSONL",
        help="recorded exchanges (rpckit migrate record); repeat for several files",
    )  # fmt: skip
    scan.add_argument("--out", type=Path, metavar="DIR", help="write the files here")
    scan.add_argument("--package", help="proto package (default: <module>.v1)")
    scan.add_argument(
        "--split", choices=["blueprint", "app"], default="blueprint",
        help="one .proto per blueprint (default) or one for the whole app",
    )  # fmt: skip
    scan.add_argument(
        "--strict-json", action="store_true",
        help="the JSON profile rejects unknown fields and checks types, as hand-written views did",
    )  # fmt: skip
    scan.add_argument(
        "--gen-package", default="", metavar="PKG",
        help="the Python package 'rpckit gen' writes the code into (imports in stubs and tests)",
    )  # fmt: skip
    scan.add_argument("--json", action="store_true", help="print the report as JSON")
    scan.set_defaults(run=_run_scan)


def _run_scan(args: argparse.Namespace) -> int:
    missing = _needs_flask("scan")
    if missing:
        return _fail("scan", missing)
    from rpckit.migrate._load import LoadError
    from rpckit.migrate._samples import SampleError
    from rpckit.migrate._scan import plan_as_dict, scan, write_outputs

    try:
        result = scan(
            args.app,
            samples=args.samples,
            out=args.out,
            package=args.package,
            split=args.split,
            strict_json=args.strict_json,
            gen_package=args.gen_package,
            progress=lambda text: print(f"scan: {text}", file=sys.stderr, flush=True),
        )
    except (LoadError, SampleError, ValueError) as exc:
        return _fail("scan", str(exc))
    if args.out is not None:
        for path in write_outputs(result, args.out):
            print(f"scan: wrote {path}", file=sys.stderr)
        proto_root = args.out / "protos"
        print(
            "scan: generate code with a [[tool.rpckit.gen]] table in pyproject.toml: "
            f'proto_path = "{proto_root}", protos = ["{proto_root}"], '
            f'out = "<package>/_gen"; then rpckit gen',
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(plan_as_dict(result.plan), indent=2))
    else:
        sys.stdout.write(result.report)
    return 0


# ---------------------------------------------------------------- record


def _record_parser(steps: Any) -> None:
    record = steps.add_parser(
        "record",
        help="serve a WSGI app and record sampled exchanges as JSON lines (bounded, redacted)",
        description=(
            "Serve APP with rpckit's embedded HTTP server (cheroot) behind the recording "
            "middleware, until SIGTERM or SIGINT. Prints one JSON line with the address once it "
            "listens. Authorization, cookies and API keys are redacted, as are the fields named "
            "with --redact-field (JSON or form bodies, query). In production, mount "
            "rpckit.migrate.Recorder in the app instead (migrate/README.md)."
        ),
        epilog=(
            "example: rpckit migrate record examples.legacy_inventory.app:create_app "
            "--http 127.0.0.1:8080 --out samples.jsonl --max-per-second 50"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    record.add_argument("app", metavar="MODULE:APP_OR_FACTORY", help="the WSGI app or factory")
    record.add_argument("--out", type=Path, required=True, metavar="JSONL", help="append here")
    record.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT", help="listen here")
    record.add_argument("--sample-rate", type=float, default=1.0, help="share of requests (0-1)")
    record.add_argument("--max-per-second", type=float, default=10.0, help="sustained samples/s")
    record.add_argument("--burst", type=int, default=20, help="samples at once")
    record.add_argument(
        "--max-body-bytes", type=int, default=64 * 1024, help="larger bodies are not recorded"
    )
    record.add_argument("--max-file-mb", type=float, default=100.0, help="stop growing the file")
    record.add_argument(
        "--redact-header", action="append", default=[], metavar="NAME", help="also redact"
    )
    record.add_argument(
        "--redact-field", action="append", default=[], metavar="NAME", help="also redact"
    )
    record.set_defaults(run=_run_record)


def _run_record(args: argparse.Namespace) -> int:
    import rpckit
    from rpckit.http import HttpServer
    from rpckit.migrate._load import LoadError, load_source
    from rpckit.migrate._record import RecordConfig, Recorder

    try:
        config = RecordConfig(
            sample_rate=args.sample_rate,
            max_per_second=args.max_per_second,
            burst=args.burst,
            max_body_bytes=args.max_body_bytes,
            max_file_bytes=max(1, int(args.max_file_mb * 1024 * 1024)),
            redact_headers=args.redact_header,
            redact_fields=args.redact_field,
        )
        app = load_source(args.app).build()
    except (LoadError, ValueError) as exc:
        return _fail("record", str(exc))
    recorder = Recorder(app, args.out, config=config)
    try:
        server = HttpServer(recorder, args.http)
        address = server.bind()
    except (OSError, ValueError, rpckit.ConfigError) as exc:
        recorder.close()
        return _fail("record", f"--http {args.http}: {exc}")
    try:
        with rpckit.graceful_exit([server]):
            server.start()
            print(json.dumps({"http": address, "out": str(args.out)}), flush=True)
            server.wait()
    finally:
        recorder.close()
    print(
        f"record: {recorder.sink.lines} exchanges written to {args.out}"
        + (f", {recorder.sink.dropped} dropped (file full)" if recorder.sink.dropped else ""),
        file=sys.stderr,
    )
    return 0


# ---------------------------------------------------------------- diff


def _diff_parser(steps: Any) -> None:
    diff = steps.add_parser(
        "diff",
        help="replay recorded requests against the old app and the new one; report differences",
        description=(
            "Replay SAMPLES in process, in order, through the old app twice and the new one, and "
            "report differences in status, reason phrase, headers (order ignored) and JSON (paths "
            "to differing keys, type changes, missing keys). Whatever differs between the two "
            "old answers is noise and is not reported (Diffy); --ignore and --rules name "
            "deliberate differences. Writes are replayed only on routes the new app marks "
            "NO_SIDE_EFFECTS, or with --allow-writes (when every app's state is throwaway). "
            "Exit 1 when differences remain."
        ),
        epilog=(
            "example: rpckit migrate diff migrate/example/samples.jsonl "
            "--old examples.legacy_inventory.app:create_app "
            "--new examples.migrated_inventory.stages:stage_all --allow-writes "
            "--rules migrate/example/deliberate.toml "
            "--set-header 'Authorization: Bearer dev-token-not-for-production'\n\n"
            "rules file:\n"
            "  [[ignore]]\n"
            '  what = "header"        # status | reason | header | json | body\n'
            '  where = "content-length"  # header name or JSON path glob ($.items[*].id)\n'
            '  route = "DELETE *"     # glob over "METHOD /legacy/<rule>"\n'
            "  status = 204           # only when the old app answered this\n"
            '  why = "..."            # printed in the report'
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diff.add_argument("samples", type=Path, nargs="+", metavar="SAMPLES", help="JSONL files")
    diff.add_argument("--old", required=True, metavar="MODULE:APP", help="the legacy app/factory")
    diff.add_argument("--new", required=True, metavar="MODULE:SHIM", help="the new app/factory")
    diff.add_argument("--allow-writes", action="store_true", help="replay writes everywhere")
    diff.add_argument(
        "--ignore", action="append", default=[], metavar="KIND[:WHERE]",
        help="a deliberate difference, e.g. reason, header:content-length, json:$.id",
    )  # fmt: skip
    diff.add_argument("--rules", type=Path, metavar="TOML", help="[[ignore]] rules with reasons")
    diff.add_argument(
        "--set-header", action="append", default=[], metavar="'NAME: VALUE'",
        help="put this value where the samples have a redacted one (credentials)",
    )  # fmt: skip
    diff.add_argument("--json", action="store_true", help="print the report as JSON")
    diff.set_defaults(run=_run_diff)


def _rules(args: argparse.Namespace) -> list[Any]:
    import tomllib

    from rpckit.migrate._diff import IgnoreRule, parse_ignore_rules

    rules = []
    for spec in args.ignore:
        what, _, where = spec.partition(":")
        rules.append(IgnoreRule(what=what, where=where or "*", why=f"--ignore {spec}"))
    if args.rules is not None:
        try:
            data = tomllib.loads(args.rules.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"--rules {args.rules}: {exc}") from exc
        rules += parse_ignore_rules(data, source=str(args.rules))
    return rules


def _run_diff(args: argparse.Namespace) -> int:
    missing = _needs_flask("diff")
    if missing:
        return _fail("diff", missing)
    from rpckit.migrate._load import LoadError, load_source
    from rpckit.migrate._replay import ReplayOptions, run_diff
    from rpckit.migrate._samples import SampleError, read_samples

    try:
        headers = {}
        for spec in args.set_header:
            name, sep, value = spec.partition(":")
            if not sep or not name.strip():
                raise ValueError(f"--set-header {spec!r} is not 'Name: value'")
            headers[name.strip()] = value.strip()
        options = ReplayOptions(
            allow_writes=args.allow_writes, rules=_rules(args), set_headers=headers
        )
        samples = read_samples(args.samples)
        old, new = load_source(args.old), load_source(args.new)
        print(f"diff: replaying {len(samples)} samples", file=sys.stderr, flush=True)
        report = run_diff(
            samples,
            old=old.build,
            old_fresh=old.fresh,
            new=new.build,
            options=options,
            progress=_progress("diff"),
        )
    except (LoadError, SampleError, ValueError) as exc:
        return _fail("diff", str(exc))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        sys.stdout.write(report.render_text())
    return 0 if report.ok else 1


# ---------------------------------------------------------------- status


def _status_parser(steps: Any) -> None:
    status = steps.add_parser(
        "status",
        help="which legacy routes still get traffic, from whom, since when; can the shim go?",
        description=(
            "Read the shim's legacy-traffic counters from every serving process -- Prometheus "
            "endpoints of 'rpckit serve --metrics' (with --workers N, one per worker: "
            "PORT..PORT+N-1) and/or JSON traffic reports (Shim.traffic_report(), a URL or a "
            "file) -- sum them, append the reading to --history and report, per route and "
            "caller, requests in the quiet window, first and last seen. Says plainly whether "
            "the Flask fallback and the shim can go. Run it on a schedule (cron)."
        ),
        epilog=(
            "example: rpckit migrate status --metrics http://10.0.0.5:9464/metrics "
            "--metrics http://10.0.0.5:9465/metrics --history legacy-traffic.jsonl --quiet-days 14"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    status.add_argument(
        "--metrics", action="append", default=[], metavar="URL",
        help="a Prometheus /metrics URL (or a file holding a scrape); repeat per process",
    )  # fmt: skip
    status.add_argument(
        "--report", action="append", default=[], metavar="URL_OR_FILE",
        help="a JSON traffic report (Shim.traffic_report()); repeat per process",
    )  # fmt: skip
    status.add_argument("--history", type=Path, metavar="JSONL", help="readings so far (appended)")
    status.add_argument(
        "--quiet-days", type=float, default=7.0, help="the window that must be quiet"
    )
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.set_defaults(run=_run_status)


def _fetch(source: str) -> str:
    if source.startswith(("http://", "https://")):
        from urllib.request import urlopen

        with urlopen(source, timeout=10) as response:  # noqa: S310 - a URL the operator gave
            text: str = response.read().decode("utf-8")
            return text
    return Path(source).read_text(encoding="utf-8")


def _run_status(args: argparse.Namespace) -> int:
    from rpckit.migrate._status import (
        Reading,
        add_counts,
        assess,
        parse_prometheus,
        parse_report,
        read_history,
    )

    if not args.metrics and not args.report:
        return _fail("status", "give --metrics URL or --report URL_OR_FILE (one per process)")
    if args.quiet_days <= 0:
        return _fail("status", f"--quiet-days must be > 0, got {args.quiet_days}")
    parts = []
    try:
        for source in args.metrics:
            print(f"status: reading {source}", file=sys.stderr, flush=True)
            try:
                parts.append(parse_prometheus(_fetch(source)))
            except ImportError:
                return _fail("status", "Prometheus input needs prometheus-client: " + _INSTALL)
        for source in args.report:
            print(f"status: reading {source}", file=sys.stderr, flush=True)
            parts.append(parse_report(json.loads(_fetch(source))))
        history = read_history(args.history) if args.history is not None else []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _fail("status", f"cannot read the counters: {exc}")
    now = time.time()
    reading = Reading(now, add_counts(parts))
    if args.history is not None:
        with args.history.open("a", encoding="utf-8") as out:
            out.write(reading.as_json())
    report = assess([*history, reading], now=now, quiet_s=args.quiet_days * 86400)
    if args.json:
        print(json.dumps(_status_dict(report), indent=2))
    else:
        sys.stdout.write(report.render_text())
    return 0


def _status_dict(report: Any) -> dict[str, Any]:
    return {
        "readings": report.readings,
        "span_s": report.span_s,
        "quiet_s": report.quiet_s,
        "fallback_can_go": report.fallback_can_go,
        "shim_can_go": report.shim_can_go,
        "callers": [
            {
                "route": c.route,
                "method": c.method,
                "caller": c.caller,
                "served_by": c.served_by,
                "recent": c.recent,
                "total": c.total,
                "first_seen": c.first_seen,
                "last_seen": c.last_seen,
            }
            for c in report.callers
        ],
    }
