"""The ``rpckit migrate`` verbs from the command line: help, record as a process, diff's exits."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rpckit.cli._main import main as rpckit_main
from rpckit.migrate._samples import REDACTED, Exchange, dump_exchange, read_samples

ROOT = Path(__file__).resolve().parents[2]
THINGS = "tests.migrate.fixture_apps:create_things_app"
RENAMED_THINGS = "tests.migrate.fixture_apps:create_renamed_things_app"
VERBS = ("scan", "record", "diff", "status")


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        rpckit_main([*argv, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal


@pytest.mark.parametrize("verb", VERBS)
def test_each_verb_has_help_with_an_example(capsys: pytest.CaptureFixture[str], verb: str) -> None:
    text = _help(capsys, "migrate", verb)
    assert f"usage: rpckit migrate {verb}" in text
    assert f"example: rpckit migrate {verb} " in text


def test_migrate_help_lists_the_verbs_and_runs_as_python_m_rpckit() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rpckit", "migrate", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "example: rpckit migrate scan" in done.stdout
    for verb in VERBS:
        assert verb in done.stdout


# ---------------------------------------------------------------- record, a real process


def _request(
    address: str, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_record_process_serves_the_app_and_writes_redacted_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "samples.jsonl"
    stderr_path = tmp_path / "record.stderr"
    argv = [
        sys.executable, "-m", "rpckit", "migrate", "record", THINGS, "--http", "127.0.0.1:0",
        "--out", str(out), "--max-per-second", "1000", "--burst", "1000",
        "--max-body-bytes", "1024", "--redact-field", "pin",
    ]  # fmt: skip
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"record did not start:\n{stderr_path.read_text()}"
        address = json.loads(line)["http"]
        secret_headers = {
            "Authorization": "Bearer sekret-token",
            "Cookie": "session=s3cr3t; theme=dark",
            "Content-Type": "application/json",
        }
        # The pin's digits must not turn up by chance elsewhere in a record: "4321" once did,
        # inside the record's timestamp (1796548082.5432136).
        body = json.dumps({"name": "a", "password": "hunter2", "pin": 73914528}).encode()
        status, echoed = _request(address, "POST", "/things", body, secret_headers)
        assert (status, json.loads(echoed)["password"]) == (201, "hunter2")  # served unchanged
        status, _ = _request(address, "GET", "/things/3?token=qq77&x=1", None, secret_headers)
        assert status == 200
        big = {"name": "b" * 100_000}  # over --max-body-bytes: served whole, not recorded
        status, echoed = _request(
            address, "POST", "/things", json.dumps(big).encode(), secret_headers
        )
        assert (status, json.loads(echoed)) == (201, big)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, stderr_path.read_text()  # ~1 s; generous on 2 cores
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert "3 exchanges written" in stderr_path.read_text()
    text = out.read_text(encoding="utf-8")
    for secret in ("sekret-token", "s3cr3t", "hunter2", "73914528", "qq77"):
        assert secret not in text, secret
    samples = read_samples([out])  # in the order the answers were closed, not sent
    assert len(samples) == 3
    (fetched,) = [s for s in samples if s.method == "GET"]
    (created,) = [s for s in samples if s.method == "POST" and not s.body_truncated]
    (oversized,) = [s for s in samples if s.body_truncated]
    assert (created.method, created.path, created.status) == ("POST", "/things", 201)
    assert created.header("Authorization") == f"Bearer {REDACTED}"
    assert created.header("Cookie") == f"session={REDACTED}; theme={REDACTED}"
    assert json.loads(created.body or b"") == {"name": "a", "password": REDACTED, "pin": REDACTED}
    assert (fetched.path, fetched.status) == ("/things/3", 200)
    assert "x=1" in fetched.query
    assert oversized.body is None
    assert oversized.body_truncated


# ---------------------------------------------------------------- diff


@pytest.fixture
def things_samples(tmp_path: Path) -> Path:
    path = tmp_path / "things.jsonl"
    exchanges = [Exchange(method="GET", path=f"/things/{n}") for n in range(3)]
    path.write_text("".join(dump_exchange(e) for e in exchanges), encoding="utf-8")
    return path


def _diff(
    capsys: pytest.CaptureFixture[str], samples: Path, new: str, *extra: str
) -> tuple[int, str, str]:
    code = rpckit_main(["migrate", "diff", str(samples), "--old", THINGS, "--new", new, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_diff_exits_0_on_identical_apps_and_cancels_the_random_id(
    capsys: pytest.CaptureFixture[str], things_samples: Path
) -> None:
    code, out, err = _diff(capsys, things_samples, THINGS)
    assert code == 0, out
    assert "no differences in 3 replayed samples" in out
    assert "$.id x3" in out  # the random id, noise: reported as cancelled, not as a difference
    assert "diff: replaying 3 samples" in err


def test_diff_exits_1_with_a_readable_summary_on_a_seeded_rename(
    capsys: pytest.CaptureFixture[str], things_samples: Path
) -> None:
    code, out, _ = _diff(capsys, things_samples, RENAMED_THINGS)
    assert code == 1
    assert "GET /things/<int:n>     3 replayed     3 differ  DIFFERS" in out
    assert "$.name" in out
    assert "$.title" in out
    assert out.rstrip().endswith("3 of 3 replayed samples differ, on 1 route")


def test_diff_json_names_each_difference(
    capsys: pytest.CaptureFixture[str], things_samples: Path
) -> None:
    code, out, _ = _diff(capsys, things_samples, RENAMED_THINGS, "--json")
    assert code == 1
    report = json.loads(out)
    assert (report["ok"], report["replayed"], report["differing"]) == (False, 3, 3)
    (route,) = report["routes"]
    assert route["route"] == "GET /things/<int:n>"
    found = {(d["kind"], d["where"], d["what"], d["count"]) for d in route["differences"]}
    assert found == {
        ("json", "$.name", "missing", 3),
        ("json", "$.title", "extra", 3),
        ("header", "content-length", "value", 3),  # "title" is one letter longer
    }
    assert [n["where"] for n in report["noise"]] == ["$.id"]


def test_diff_ignore_rules_make_a_deliberate_rename_pass(
    capsys: pytest.CaptureFixture[str], things_samples: Path
) -> None:
    ignores = ["--ignore", "json:$.name", "--ignore", "json:$.title"]
    ignores += ["--ignore", "header:content-length"]  # "title" is one letter longer
    code, out, _ = _diff(capsys, things_samples, RENAMED_THINGS, *ignores)
    assert code == 0, out
    assert "deliberate (ignore rules):" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--set-header", "no colon"), "is not 'Name: value'"),
        (("--rules", "/nonexistent/rules.toml"), "--rules /nonexistent/rules.toml"),
    ],
)
def test_diff_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], things_samples: Path, extra: tuple[str, ...], message: str
) -> None:
    code, out, err = _diff(capsys, things_samples, THINGS, *extra)
    assert code == 2
    assert out == ""
    assert err.startswith("rpckit migrate diff: error: ")
    assert message in err
    assert err.count("\n") == 1


def test_diff_missing_samples_file_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _diff(capsys, tmp_path / "none.jsonl", THINGS)
    assert code == 2
    assert "none.jsonl" in err
    assert err.count("\n") == 1
