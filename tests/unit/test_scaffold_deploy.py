"""The generated deployment files agree with each other and with rpckit (checked statically).

The Kubernetes manifests are parsed (PyYAML) and compared with the container's
command: the same ports, the service's real health name, and a termination
grace period that covers the preStop pause plus rpckit's drain and grace. The
Dockerfile's entry point is the README's serve command, and rpckit's own
argument parser accepts it. No Docker engine or cluster is needed.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from typing import Any

import pytest
import yaml

import rpckit
from rpckit.cli._main import _parser
from rpckit.scaffold._answers import Answers
from rpckit.scaffold._render import Facts, RenderedFile, context, render
from rpckit.scaffold._template import builtin_template, load_template

DEFAULTS = rpckit.ServerConfig()


def project(http: bool) -> dict[str, RenderedFile]:
    answers = Answers.from_inputs(
        "order-service", package="orders", http=http, rpckit="rpckit==0.1.0", python="3.11"
    )
    facts = Facts(rpckit_version="0.1.0", drain_s=DEFAULTS.drain_s, grace_s=DEFAULTS.grace_s)
    template = load_template(builtin_template())
    return render(template, context(answers, facts, template_version=template.version))


@pytest.fixture(params=[True, False], ids=["http", "grpc-only"])
def files(request: pytest.FixtureRequest) -> dict[str, RenderedFile]:
    return project(http=request.param)


def entrypoint(files: dict[str, RenderedFile]) -> list[str]:
    lines = [
        line for line in files["Dockerfile"].text.splitlines() if line.startswith("ENTRYPOINT ")
    ]
    assert len(lines) == 1
    argv = json.loads(lines[0].removeprefix("ENTRYPOINT "))
    assert isinstance(argv, list)
    return [str(arg) for arg in argv]


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def port_of(argv: list[str], name: str) -> int | None:
    address = flag(argv, name)
    return None if address is None else int(address.rpartition(":")[2])


def manifests(files: dict[str, RenderedFile], name: str) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(files[f"deploy/kubernetes/{name}"].text) if doc]
    assert all(isinstance(doc, dict) for doc in docs)
    return docs


def deployment(files: dict[str, RenderedFile]) -> dict[str, Any]:
    (found,) = [d for d in manifests(files, "deployment.yaml") if d["kind"] == "Deployment"]
    return found


def health_service_name(files: dict[str, RenderedFile]) -> str:
    proto = files["protos/orders/v1/order_service.proto"].text
    package = re.search(r"^package ([\w.]+);", proto, re.MULTILINE)
    service = re.search(r"^service (\w+) \{", proto, re.MULTILINE)
    assert package is not None
    assert service is not None
    return f"{package[1]}.{service[1]}"


def test_the_dockerfile_entry_point_is_the_readme_serve_command(
    files: dict[str, RenderedFile],
) -> None:
    readme = files["README.md"].text
    serve = readme.split("## Serve", 1)[1]
    block = re.search(r"```bash\n(.*?)\n```", serve, re.DOTALL)
    assert block is not None
    assert shlex.split(block[1]) == entrypoint(files)


def test_rpckit_accepts_the_command_and_its_drain_and_grace_are_rpckits_defaults(
    files: dict[str, RenderedFile],
) -> None:
    argv = entrypoint(files)
    assert argv[:2] == ["rpckit", "serve"]
    args = _parser().parse_args(argv[1:])
    assert (args.drain, args.grace) == (DEFAULTS.drain_s, DEFAULTS.grace_s)
    module, _, factory = args.app.partition(":")
    server = ast.parse(files[module.replace(".", "/") + ".py"].text)
    functions = {node.name for node in server.body if isinstance(node, ast.FunctionDef)}
    assert factory in functions
    if args.http_app is not None:
        assert args.http_app.partition(":")[2] in functions


def test_the_deployment_uses_the_commands_ports_and_the_real_health_service(
    files: dict[str, RenderedFile],
) -> None:
    argv = entrypoint(files)
    container = deployment(files)["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {
        "grpc": port_of(argv, "--grpc"),
        "http": port_of(argv, "--http"),
        "metrics": port_of(argv, "--metrics"),
    }
    assert ports == {name: port for name, port in expected.items() if port is not None}
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["grpc"] == {"port": ports["grpc"], "service": health_service_name(files)}
    assert liveness["grpc"] == {"port": ports["grpc"], "service": ""}
    exposed = re.search(r"^EXPOSE (.*)$", files["Dockerfile"].text, re.MULTILINE)
    assert exposed is not None
    assert sorted(int(p) for p in exposed[1].split()) == sorted(ports.values())


def test_the_stop_timing_covers_prestop_drain_and_grace(files: dict[str, RenderedFile]) -> None:
    argv = entrypoint(files)
    drain, grace = float(flag(argv, "--drain") or 0), float(flag(argv, "--grace") or 0)
    spec = deployment(files)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    prestop = float(command[1])
    assert prestop > 0
    assert spec["terminationGracePeriodSeconds"] >= prestop + drain + grace + 1
    liveness = container["livenessProbe"]
    # A draining server reports NOT_SERVING: liveness must not kill it before it is done.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > drain + grace


def test_the_headless_service_finds_the_pods_by_their_labels(
    files: dict[str, RenderedFile],
) -> None:
    pod = deployment(files)["spec"]["template"]
    port_names = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    services = manifests(files, "service.yaml")
    headless = services[0]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["ports"] == [
        {"name": "grpc", "port": port_of(entrypoint(files), "--grpc"), "targetPort": "grpc"}
    ]
    for service in services:
        assert service["kind"] == "Service"
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert len(services) == (2 if "http" in port_names else 1)


def test_the_container_runs_as_the_non_root_user_the_pod_requires(
    files: dict[str, RenderedFile],
) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", files["Dockerfile"].text, re.MULTILINE)
    assert user is not None
    security = deployment(files)["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (int(user[1]), int(user[2]))
    assert int(user[1]) != 0
    resources = deployment(files)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
