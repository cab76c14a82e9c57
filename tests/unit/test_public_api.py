"""The public surface: small, explicit, sorted."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

import rpckit


def test_all_is_sorted_and_complete() -> None:
    # isort style (ruff RUF022): CONSTANTS, then Classes, then functions, each alphabetical.
    def style(name: str) -> tuple[bool, bool, str]:
        return (not name.isupper(), not name[0].isupper(), name)

    assert list(rpckit.__all__) == sorted(rpckit.__all__, key=style)
    loaded = {name: getattr(rpckit, name) for name in rpckit.__all__}  # imported on first use
    assert all(value is not None for value in loaded.values())
    public = {name for name in vars(rpckit) if not name.startswith("_")}
    submodules = {
        "cli",
        "client",
        "codegen",
        "core",
        "http",
        "migrate",
        "observe",
        "scaffold",
        "server",
        "testing",
        "v1",
    }
    assert public - submodules == set(rpckit.__all__)
    assert set(dir(rpckit)) >= set(rpckit.__all__)


def test_import_rpckit_loads_no_grpc() -> None:
    # The `rpckit` command lives in this package; `rpckit serve --workers`'s supervisor must
    # not load grpc (rpckit.server._workers), so `import rpckit` may not either.
    code = "import sys, rpckit, rpckit.cli, rpckit.server._workers; print(sorted(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    modules = set(ast.literal_eval(done.stdout))
    heavy = {"grpc", "google.protobuf", "rpckit.server._server", "rpckit.server._errors"}
    assert modules.isdisjoint(heavy), sorted(modules & heavy)
    # Tracing is optional (rpckit[otel]) and off unless asked: no OpenTelemetry either.
    assert not [m for m in modules if m.startswith("opentelemetry")]


def test_a_missing_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = rpckit.no_such_name


def test_every_public_name_is_documented() -> None:
    for name in rpckit.__all__:
        obj = getattr(rpckit, name)
        if callable(obj):
            assert obj.__doc__, f"rpckit.{name} has no docstring"


#: Every public name as it stood when rpckit's modules moved into subpackages (issue 13).
#: Users import them from these two places; they may gain names, never lose or move one.
RPCKIT_NAMES = (
    "LOAD_METADATA_KEY", "AdaptiveThrottleConfig", "AdmissionConfig", "BackendStatus",
    "BalancedChannel", "BalancedChannelConfig", "ConfigError", "ConnectionStatus", "Criticality",
    "OutlierConfig", "PickerConfig", "RetryBudgetConfig", "Server", "ServerConfig", "ServerState",
    "StatusError", "TlsConfig", "abort", "cancelled", "connect", "graceful_exit",
    "load_from_metadata", "raise_if_cancelled", "status_details", "time_remaining",
)  # fmt: skip
HTTP_NAMES = (
    "GATEWAY_STATUS_FOR_CODE", "ErrorRenderer", "Guard", "GuardedCall", "HttpError", "HttpServer",
    "JsonDifference", "LegacyProfile", "RouteOptions", "RouteSettings", "ShadowReport", "Shim",
    "ShimConfig", "render_error_object", "render_gateway_error",
)  # fmt: skip


def test_every_public_name_still_imports_from_where_users_import_it() -> None:
    import rpckit.http

    assert set(RPCKIT_NAMES) <= set(rpckit.__all__)
    assert set(HTTP_NAMES) <= set(rpckit.http.__all__)
    # In a fresh interpreter, as a user's module would: one `from ... import` per module.
    code = (
        f"from rpckit import {', '.join(RPCKIT_NAMES)}\n"
        f"from rpckit.http import {', '.join(HTTP_NAMES)}\n"
        "import rpckit, rpckit.http\n"
        f"assert all(getattr(rpckit, n) is globals()[n] for n in {RPCKIT_NAMES!r})\n"
        f"assert all(getattr(rpckit.http, n) is globals()[n] for n in {HTTP_NAMES!r})\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_observe_loads_no_opentelemetry_until_tracing_is_asked() -> None:
    code = (
        "import sys, rpckit.observe as o; "
        "assert list(o.__all__) == sorted(o.__all__), o.__all__; "
        "assert all(getattr(o, n) is not None for n in o.__all__); "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert ast.literal_eval(done.stdout) == []
