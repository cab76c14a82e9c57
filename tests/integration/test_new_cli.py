"""``rpckit new`` on a real disk: bad inputs refused whole, and updates from template v1 to v2.

The update tests use two versions of rpckit's own template: v1 is it as it
ships, v2 changes the Dockerfile, a handler in ``service.py``, the proto (so
code is regenerated) and a test file. Bad inputs run the real command in a
subprocess, which must print one line, exit 2 and leave the disk as it was.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rpckit.cli._main import _parser, main
from rpckit.scaffold._command import run as scaffold_run

ROOT = Path(__file__).resolve().parents[2]
RPCKIT = str(Path(sys.executable).parent / "rpckit")
BUILTIN = ROOT / "rpckit" / "scaffold" / "templates" / "service"

# The handler line template v2 changes, and what each side makes of it.
CANCEL_LINE = (
    "            rpckit.raise_if_cancelled()  # the caller has gone: stop working for nobody\n"
)
CANCEL_V2 = "            rpckit.raise_if_cancelled()  # deadline passed or caller gone: stop\n"
CANCEL_USERS = "            rpckit.raise_if_cancelled()  # the user's own words\n"
# A line the user adds to another handler.
DELETE_LINE = "            self.store.delete(request.id)\n"
USERS_LINE = "            self.audit.append(request.id)  # the user's addition\n"
DOCKER_LABEL = 'LABEL org.opencontainers.image.title="{{ name }}"\n'


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    """``rpckit ARGV`` in this process."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file and folder under ``folder``: content, mode and modification time."""
    found: dict[str, tuple[bytes, int, int]] = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() else b""
        found[str(path.relative_to(folder))] = (content, info.st_mode, info.st_mtime_ns)
    return found


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} lacks {old!r}"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def versions(tmp_path: Path) -> tuple[Path, Path]:
    """rpckit's template as v1, and a v2 that changes four of its files."""
    v1, v2 = tmp_path / "template-v1", tmp_path / "template-v2"
    shutil.copytree(BUILTIN, v1)
    shutil.copytree(BUILTIN, v2)
    edit(v2 / "template.toml", "version = 1", "version = 2")
    edit(v2 / "Dockerfile.jinja", "USER 10001:10001\n", DOCKER_LABEL + "USER 10001:10001\n")
    edit(v2 / "{{package}}" / "service.py.jinja", CANCEL_LINE, CANCEL_V2)
    edit(
        v2 / "protos" / "{{package}}" / "v1" / "{{proto_stem}}.proto.jinja",
        "  string description = 3;\n",
        "  string description = 3;\n  // Who looks after it.\n  string owner = 4;\n",
    )
    edit(v2 / "tests" / "test_config.py.jinja", '"""Settings from', '"""Settings (v2) from')
    return v1, v2


def generate(capsys: pytest.CaptureFixture[str], project: Path, template: Path) -> None:
    made = cli(capsys, "new", "orders", "--path", str(project), "--template", str(template))
    assert made.code == 0, made.err


def update(capsys: pytest.CaptureFixture[str], project: Path, template: Path) -> Result:
    return cli(capsys, "new", "--update", "--path", str(project), "--template", str(template))


@pytest.fixture
def at_v1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, versions: tuple[Path, Path]
) -> tuple[Path, Path]:
    """A project generated from template v1, and template v2."""
    v1, v2 = versions
    project = tmp_path / "orders"
    generate(capsys, project, v1)
    return project, v2


def test_template_changes_land_user_edits_stay_deleted_files_stay_deleted(
    capsys: pytest.CaptureFixture[str], at_v1: tuple[Path, Path]
) -> None:
    project, v2 = at_v1
    edit(project / "orders" / "service.py", DELETE_LINE, DELETE_LINE + USERS_LINE)
    (project / "tests" / "test_config.py").unlink()

    result = update(capsys, project, v2)

    assert result.code == 0, result.err
    assert 'LABEL org.opencontainers.image.title="orders"' in (project / "Dockerfile").read_text()
    service = (project / "orders" / "service.py").read_text()
    assert USERS_LINE in service
    assert CANCEL_V2 in service
    assert "<<<<<<<" not in service
    assert not (project / "tests" / "test_config.py").exists()
    lines = result.out.splitlines()
    assert "  updated       Dockerfile" in lines
    assert "  merged        orders/service.py" in lines
    assert any(line.startswith("  kept deleted  tests/test_config.py: ") for line in lines)
    recorded = tomllib.loads((project / ".rpckit" / "answers.toml").read_text())
    assert recorded["template"]["version"] == 2
    base = project / ".rpckit" / "base"
    assert "(v2)" in (base / "tests" / "test_config.py").read_text()
    assert (base / "orders" / "service.py").read_text().count(CANCEL_V2) == 1
    # The proto changed cleanly, so its code was generated again: gen --check passes.
    generated = project / "orders" / "_gen" / "orders" / "v1" / "orders_pb2.pyi"
    assert "owner" in generated.read_text()
    assert cli(capsys, "gen", "--check", "--project", str(project)).code == 0


def test_a_second_update_with_nothing_to_do_changes_nothing(
    capsys: pytest.CaptureFixture[str], at_v1: tuple[Path, Path]
) -> None:
    project, v2 = at_v1
    assert update(capsys, project, v2).code == 0
    before = snapshot(project)
    again = update(capsys, project, v2)
    assert (again.code, again.err) == (0, "")
    assert again.out.splitlines()[-1] == "already up to date: nothing to change"
    assert snapshot(project) == before


def test_both_changing_a_line_is_a_marked_conflict_and_exit_1(
    capsys: pytest.CaptureFixture[str], at_v1: tuple[Path, Path]
) -> None:
    project, v2 = at_v1
    service = project / "orders" / "service.py"
    edit(service, CANCEL_LINE, CANCEL_USERS)

    result = update(capsys, project, v2)

    assert result.code == 1
    assert "orders/service.py" in result.err
    assert "rpckit gen" in result.err  # the proto changed, but nothing is generated mid-conflict
    text = service.read_text()
    assert (
        "<<<<<<< yours\n"
        + CANCEL_USERS
        + "||||||| template v1 (as generated)\n"
        + CANCEL_LINE
        + "=======\n"
        + CANCEL_V2
        + ">>>>>>> template v2\n"
    ) in text
    assert "LABEL" in (project / "Dockerfile").read_text()  # the rest of the update landed

    # Again before resolving: refused, nothing written.
    before = snapshot(project)
    again = subprocess.run(
        [RPCKIT, "new", "--update", "--path", str(project), "--template", str(v2)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1
    assert "orders/service.py:" in again.stderr
    assert "resolve them first" in again.stderr
    assert snapshot(project) == before

    # Resolved (the user keeps their line): up to date.
    start = text.index("<<<<<<< yours\n")
    end = text.index(">>>>>>> template v2\n") + len(">>>>>>> template v2\n")
    service.write_text(text[:start] + CANCEL_USERS + text[end:])
    assert update(capsys, project, v2).out.splitlines()[-1] == (
        "already up to date: nothing to change"
    )


def write_template(folder: Path, version: int, files: dict[str, str], manifest: str = "") -> Path:
    folder.mkdir()
    (folder / "template.toml").write_text(f"version = {version}\n{manifest}")
    for name, text in files.items():
        path = folder / f"{name}.jinja"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def test_files_the_template_drops_or_adds(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A template without protos: dropped files go unless edited, new ones come (with modes)."""
    old = write_template(
        tmp_path / "old", 1, {"a.txt": "a {{ name }}\n", "b.txt": "b\n", "c.txt": "c\n"}
    )
    new = write_template(
        tmp_path / "new",
        2,
        {"a.txt": "a {{ name }}\n", "run.sh": "#!/bin/sh\necho {{ name }}\n"},
        'executable = ["run.sh.jinja"]\n',
    )
    project = tmp_path / "tiny"
    generate(capsys, project, old)
    (project / "c.txt").write_text("c, edited\n")

    result = update(capsys, project, new)

    assert result.code == 1
    assert not (project / "b.txt").exists()
    assert (project / "c.txt").read_text() == "c, edited\n"
    assert "c.txt" in result.err
    run = project / "run.sh"
    assert run.read_text() == "#!/bin/sh\necho orders\n"
    assert run.stat().st_mode & stat.S_IXUSR
    lines = result.out.splitlines()
    assert "  removed       b.txt: the template no longer has it" in lines
    assert "  created       run.sh" in lines
    assert update(capsys, project, new).code == 0  # c.txt is the user's own now

    older = update(capsys, project, old)
    assert older.code == 2
    assert "newer than this template's v1: upgrade rpckit" in older.err


def test_a_failure_after_rendering_leaves_nothing_behind(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """protoc fails on the rendered proto: no project, no staging folder."""
    broken = write_template(
        tmp_path / "broken",
        1,
        {
            "pyproject.toml": '[[tool.rpckit.gen]]\nproto_path = "protos"\n'
            'protos = ["protos"]\nout = "gen"\n',
            "protos/bad.proto": 'syntax = "proto3";\nmessage {\n',
        },
    )
    place = tmp_path / "place"
    place.mkdir()
    result = cli(
        capsys, "new", "orders", "--path", str(place / "a" / "b"), "--template", str(broken)
    )
    assert result.code == 2
    assert result.err.startswith("rpckit new: error: rpckit gen: protoc failed")
    assert result.err.count("\n") == 1
    assert list(place.iterdir()) == []


def test_an_existing_empty_folder_is_used(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    project = tmp_path / "here"
    project.mkdir(mode=0o750)
    generate(capsys, project, BUILTIN)
    assert (project / "pyproject.toml").is_file()
    assert stat.S_IMODE(project.stat().st_mode) == 0o750


# ---------------------------------------------------------------- refused inputs


def refused(argv: list[str], *, cwd: Path, watched: Path, prefix: tuple[str, ...] = ()) -> str:
    """Run ``rpckit ARGV``: exit 2, one line on stderr, nothing on stdout, ``watched`` unchanged."""
    before = snapshot(watched)
    done = subprocess.run(
        [*prefix, RPCKIT, *argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert snapshot(watched) == before
    return done.stderr


def test_an_existing_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "notes.txt").write_text("mine\n")
    err = refused(["new", "orders"], cwd=tmp_path, watched=tmp_path)
    assert "exists and is not empty" in err
    assert "rpckit new --update" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["new", "2fast"], "not an identifier"),
        (["new", "my service!"], "not an identifier"),
        (["new", "json"], "shadow the standard library"),
        (["new", "orders", "--package", "class"], "is a Python keyword"),
        (["new", "x" * 40], "at most 32"),
        (["new"], "give the service's NAME"),
        (["new", "orders", "--rpckit", "flask"], "--rpckit 'flask'"),
        (["new", "orders", "--template", "no/such/folder"], "no such folder"),
        (["new", "--update"], "has no .rpckit/answers.toml"),
        (["new", "orders", "--update"], "--update takes no NAME"),
        (["new", "orders", "--path", "file.txt/orders"], "is not a folder"),
        (["new", "orders", "--path", "file.txt"], "exists and is not a folder"),
        (["new", "orders", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_inputs_get_one_line_and_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    (tmp_path / "file.txt").write_text("a file\n")
    assert message in refused(argv, cwd=tmp_path, watched=tmp_path)


def test_an_unwritable_path_is_refused(tmp_path: Path) -> None:
    """A folder this user may not write in. Root may write anywhere, so as root the command
    runs without the capabilities that let it (setpriv, util-linux)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "install util-linux (setpriv) to run this test as root"
        prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--")
    try:
        err = refused(
            ["new", "orders", "--path", str(locked / "deep" / "orders")],
            cwd=tmp_path, watched=tmp_path, prefix=prefix,
        )  # fmt: skip
    finally:
        locked.chmod(0o755)
    assert f"cannot write in {locked}: Permission denied" in err


@pytest.fixture
def tiny(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[Path, Path]:
    """A project generated from a one-file template, and that template."""
    template = write_template(tmp_path / "tiny-template", 1, {"a.txt": "a\n"})
    project = tmp_path / "tiny"
    generate(capsys, project, template)
    return project, template


def test_update_when_the_recorded_template_is_gone_is_refused(
    tmp_path: Path, tiny: tuple[Path, Path]
) -> None:
    project, template = tiny
    shutil.rmtree(template)
    err = refused(["new", "--update"], cwd=project, watched=tmp_path)
    assert f"names, {template}, is gone: pass --template DIR" in err


def test_update_without_the_merge_base_is_refused(tiny: tuple[Path, Path]) -> None:
    project, template = tiny
    shutil.rmtree(project / ".rpckit" / "base")
    err = refused(["new", "--update", "--template", str(template)], cwd=project, watched=project)
    assert ".rpckit/base is missing" in err


def test_help_shows_an_example() -> None:
    done = subprocess.run([RPCKIT, "new", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "examples:\n  rpckit new orders\n" in done.stdout
    assert "--update" in done.stdout


def test_the_readme_commands_for_rpckit_new_are_ones_rpckit_takes() -> None:
    section = (ROOT / "README.md").read_text().split("## A new service", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line) for line in block.splitlines() if line.startswith("rpckit ")]
    assert [argv[:2] for argv in commands] == [["rpckit", "new"], ["rpckit", "new"]]
    assert "pip install 'rpckit[new]'" in block
    for argv in commands:
        args = _parser().parse_args(argv[1:])
        assert args.run is scaffold_run


def test_registering_the_verb_loads_neither_grpc_nor_jinja2() -> None:
    """Every rpckit command builds the whole parser, rpckit serve --workers's supervisor too."""
    code = (
        "import sys, rpckit.cli._main; rpckit.cli._main._parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'jinja2')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_without_the_new_extra_the_error_says_what_to_install(tmp_path: Path) -> None:
    """rpckit installed without rpckit[new]: Jinja2 cannot be imported."""
    code = (
        "import sys; sys.modules['jinja2'] = None; from rpckit.cli._main import main; "
        f"sys.exit(main(['new', 'orders', '--path', {str(tmp_path / 'orders')!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == (
        "rpckit new: error: rpckit new needs Jinja2 and mypy-protobuf: pip install 'rpckit[new]'\n"
    )
    assert list(tmp_path.iterdir()) == []
