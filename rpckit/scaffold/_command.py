"""``rpckit new``: the command line over rendering, the writer and updates.

``add_parser(verbs)`` registers the verb on rpckit's argparse sub-parsers and
``run(args)`` carries it out. Usage errors raise ``rpckit.ConfigError`` (the
``rpckit`` command prints them as one line and exits 2); an update that leaves
conflicts returns 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import sys
import tomllib
from pathlib import Path
from typing import Any

from rpckit.scaffold._answers import (
    ANSWERS_PATH,
    Answers,
    AnswersError,
    Recorded,
    parse_answers_toml,
    rpckit_requirement,
)
from rpckit.scaffold._merge import Labels
from rpckit.scaffold._render import Facts, RenderedFile, context, render
from rpckit.scaffold._template import (
    BUILTIN_SOURCE,
    TemplateError,
    TemplateSource,
    builtin_template,
    load_template,
)
from rpckit.scaffold._update import Outcome, UpdatePlan, plan_update, unresolved_conflicts
from rpckit.scaffold._writer import (
    ScaffoldError,
    apply_update,
    check_target,
    create_project,
    generate_code,
    read_base,
    read_texts,
)
from rpckit.server._config import ConfigError

__all__ = ["add_parser", "default_rpckit_requirement", "run"]

EXIT_CONFLICTS = 1

_EXAMPLE = """\
examples:
  rpckit new orders
  rpckit new order-service --package orders --path ~/src/orders --no-http
  cd orders && rpckit new --update      # take the template's later changes

Writes a complete service: protos/PKG/v1/NAME.proto (get, list with paging,
create, update, delete; google.api.http rules), its generated code, a servicer
served by 'rpckit serve', a client on rpckit.BalancedChannel, tests, README,
Dockerfile, Kubernetes manifests and a CI script. Its tests pass as generated.
.rpckit/ records the answers and the files as generated: --update re-renders
with this rpckit's template and merges three ways (your changes stay, files you
deleted stay deleted, conflicts are marked and the exit status is 1).
"""


def add_parser(verbs: argparse._SubParsersAction[Any]) -> None:
    """Register ``rpckit new`` on the ``rpckit`` command's sub-parsers."""
    new = verbs.add_parser(
        "new",
        help="create a complete gRPC service (protos, server, client, tests, container, k8s)",
        description=(
            "Create the project NAME in a new folder (./NAME, or --path). With --update, "
            "bring a project rpckit generated up to date with this rpckit's template."
        ),
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    new.add_argument("name", nargs="?", metavar="NAME", help="the service's name, e.g. orders")
    new.add_argument(
        "--path",
        type=Path,
        metavar="DIR",
        help="the project's folder (default: ./NAME; with --update: the current folder)",
    )
    new.add_argument(
        "--package", metavar="PKG", help="the Python package (default: NAME with '_' for '-')"
    )
    new.add_argument(
        "--no-http",
        action="store_true",
        help="gRPC only: no HTTP/JSON shim for callers still on JSON",
    )
    new.add_argument(
        "--rpckit",
        metavar="SPEC",
        help="the project's requirement on rpckit: a version (0.1.0), a requirement "
        "(rpckit>=0.1) or the path of an rpckit checkout (default: this rpckit: its "
        "checkout's path when it is one, else its version)",
    )
    new.add_argument(
        "--update",
        action="store_true",
        help="re-render the project at --path (or here) with this rpckit's template and "
        "merge the changes into your files",
    )
    new.add_argument(
        "--template",
        type=Path,
        metavar="DIR",
        help="render this template folder (template.toml and *.jinja files) instead of "
        "rpckit's own",
    )
    new.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Carry out ``rpckit new``; ConfigError for anything the user has to change."""
    try:
        return _update(args) if args.update else _create(args)
    except (AnswersError, TemplateError, ScaffoldError) as exc:
        raise ConfigError(str(exc)) from None


# ---------------------------------------------------------------- create


def _create(args: argparse.Namespace) -> int:
    if args.name is None:
        raise ConfigError("give the service's NAME, e.g. rpckit new orders")
    requirement = _requirement(args.rpckit)
    answers = Answers.from_inputs(
        args.name,
        package=args.package,
        http=not args.no_http,
        rpckit=requirement or default_rpckit_requirement(),
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
    )
    if requirement is not None:
        answers = dataclasses.replace(answers, rpckit_pinned=True)
    target = check_target(args.path if args.path is not None else Path(answers.name))
    template, source = _template(args.template, None)
    files = _render(template, answers)
    print(f"rendering {len(files)} files from template {source} v{template.version}", flush=True)
    created = create_project(target, files, _recorded(answers, template, source))
    generated = len(created.generated)
    print(f"created {created.root}, with code generated from protos/ ({generated} files)")
    shown = _shown(created.root)
    print("next:")
    if shown != ".":
        print(f"  cd {shown}")
    install = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]'"
    print(f"  {install} && .venv/bin/python -m {answers.package}.demo")
    print(f"  {install} && .venv/bin/python -m pytest -q")
    return 0


def _shown(root: Path) -> str:
    try:
        return str(root.relative_to(Path.cwd()))
    except ValueError:
        return str(root)


# ---------------------------------------------------------------- update


def _update(args: argparse.Namespace) -> int:
    for flag, given in (("NAME", args.name), ("--package", args.package)):
        if given is not None:
            raise ConfigError(
                f"--update takes no {flag}: the answers are in {ANSWERS_PATH} (edit them there)"
            )
    if args.no_http:
        raise ConfigError(f"--update takes no --no-http: change http to false in {ANSWERS_PATH}")
    root = Path(args.path if args.path is not None else ".").absolute()
    answers_file = root / ANSWERS_PATH
    try:
        recorded = parse_answers_toml(answers_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{root} has no {ANSWERS_PATH}: run --update in a project 'rpckit new' made, "
            "or pass --path"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {answers_file}: {exc.strerror or exc}") from None
    except AnswersError as exc:
        raise ConfigError(f"{answers_file}: {exc}") from None
    template, source = _template(args.template, recorded.template_source)
    if template.version < recorded.template_version:
        raise ConfigError(
            f"the project is at template v{recorded.template_version}, newer than this "
            f"template's v{template.version}: upgrade rpckit"
        )
    answers = recorded.answers
    requirement = _requirement(args.rpckit)
    if requirement is not None:
        answers = dataclasses.replace(answers, rpckit=requirement, rpckit_pinned=True)
    elif not answers.rpckit_pinned:
        answers = dataclasses.replace(answers, rpckit=default_rpckit_requirement())
    theirs = _render(template, answers)
    base = read_base(root)
    ours = read_texts(root, frozenset(base) | frozenset(theirs))
    labels = Labels(
        ours="yours",
        base=f"template v{recorded.template_version} (as generated)",
        theirs=f"template v{template.version}",
    )
    unresolved = unresolved_conflicts(ours, labels)
    if unresolved:
        where = ", ".join(f"{path}:{lines[0]}" for path, lines in unresolved.items())
        raise ConfigError(
            f"conflict markers from the last update are still in {where}: resolve them first"
        )
    new_record = _recorded(answers, template, source)
    texts = {path: rendered.text for path, rendered in theirs.items()}
    plan = plan_update(base, ours, texts, labels=labels)
    print(
        f"updating {root} from template v{recorded.template_version} to {source} "
        f"v{template.version}",
        flush=True,
    )
    if not plan.changes and base == texts and new_record == recorded:
        print("already up to date: nothing to change")
        return 0
    apply_update(root, plan, theirs, new_record)
    _report(plan)
    return _after_update(root, plan)


def _report(plan: UpdatePlan) -> None:
    for change in plan.files:
        if change.outcome is Outcome.UNCHANGED:
            continue
        detail = f" ({change.conflicts} conflicts)" if change.conflicts else ""
        note = f": {change.note}" if change.note else ""
        print(f"  {change.outcome.value:<13} {change.path}{detail}{note}")
    if not plan.changes:
        print("  no file changed; the merge base and answers now record the new template")


def _after_update(root: Path, plan: UpdatePlan) -> int:
    attention = plan.attention
    protos_changed = any(c.path.endswith(".proto") for c in plan.changes)
    if attention:
        names = ", ".join(c.path for c in attention)
        files = "1 file needs" if len(attention) == 1 else f"{len(attention)} files need"
        print(
            f"{files} you: {names}. Resolve the conflict markers "
            "(<<<<<<< yours ... >>>>>>> template)"
            + (", then run 'rpckit gen'" if protos_changed else "")
            + ", then run the tests",
            file=sys.stderr,
        )
        return EXIT_CONFLICTS
    if protos_changed:
        written = generate_code(root)
        print(f"  regenerated code from protos/ ({len(written)} files changed)")
    print("updated; run the tests")
    return 0


# ---------------------------------------------------------------- shared


def _requirement(spec: str | None) -> str | None:
    if spec is None:
        return None
    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not _is_rpckit_checkout(folder):
            raise ConfigError(f"--rpckit {spec}: that folder holds no rpckit pyproject.toml")
        return f"rpckit @ {folder.resolve().as_uri()}"
    return rpckit_requirement(spec)


def _is_rpckit_checkout(folder: Path) -> bool:
    try:
        data = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return bool(data.get("project", {}).get("name") == "rpckit")


def default_rpckit_requirement(package_dir: Path | None = None) -> str:
    """This rpckit: its checkout by path when it runs from one, else its released version.

    ``package_dir`` is where the ``rpckit`` package is (default: where it was imported from).
    """
    package = package_dir if package_dir is not None else Path(__file__).resolve().parents[1]
    checkout = package.parent
    if _is_rpckit_checkout(checkout):
        return f"rpckit @ {checkout.as_uri()}"
    return f"rpckit=={_rpckit_version()}"


def _rpckit_version() -> str:
    try:
        return importlib.metadata.version("rpckit")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree without metadata
        return "0"


def _template(given: Path | None, recorded_source: str | None) -> tuple[TemplateSource, str]:
    """The template to render and how the answers file names it."""
    if given is None and recorded_source not in (None, BUILTIN_SOURCE):
        recorded = Path(str(recorded_source))
        if not recorded.is_dir():
            raise ConfigError(
                f"the template {ANSWERS_PATH} names, {recorded}, is gone: pass --template DIR"
            )
        given = recorded
    if given is None:
        return load_template(builtin_template()), BUILTIN_SOURCE
    if not given.is_dir():
        raise ConfigError(f"--template {given}: no such folder")
    return load_template(given), str(given.resolve())


def _render(template: TemplateSource, answers: Answers) -> dict[str, RenderedFile]:
    import rpckit

    defaults = rpckit.ServerConfig()
    facts = Facts(
        rpckit_version=_rpckit_version(),
        drain_s=defaults.drain_s,
        grace_s=defaults.grace_s,
    )
    return render(template, context(answers, facts, template_version=template.version))


def _recorded(answers: Answers, template: TemplateSource, source: str) -> Recorded:
    return Recorded(
        answers=answers,
        template_version=template.version,
        template_source=source,
        rendered_by=_rpckit_version(),
    )
