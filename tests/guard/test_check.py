"""`dualshift check` on a copy of the fixture service: rules, ignores, baseline, formats, the hook."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualshift.cli import app

REPO = Path(__file__).resolve().parents[2]
XBOT = REPO / "fixtures" / "xbot"
SARIF = REPO / "node_modules" / ".bin" / "sarif-multitool"
DIRECT_WRITE = "export const post = (db: any, text: string) => db.from('tweets').insert({ text });\n"


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def service(tmp_path: Path) -> Path:
    root = tmp_path / "xbot"
    shutil.copytree(XBOT, root, symlinks=True, ignore=shutil.ignore_patterns("expected", "node_modules"))
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base")
    return root


def _check(root: Path, *args: str):
    return CliRunner().invoke(app, ["check", str(root), "--plan", str(root / "dualshift.toml"), *args])


def test_a_new_direct_write_fails_and_passes_once_wrapped(service: Path) -> None:
    wrapped = CliRunner().invoke(app, ["codemod", "wrap", str(service), "--plan", str(service / "dualshift.toml")])
    assert wrapped.exit_code == 0
    assert (
        CliRunner()
        .invoke(app, ["codemod", "wrap", str(service), "--plan", str(service / "dualshift.toml"), "--apply", "--force"])
        .exit_code
        == 0
    )
    clean = _check(service)
    assert clean.exit_code == 0, clean.output  # only the run-time delete is left, as a warning
    assert "0 error(s), 1 warning(s)" in clean.output and "DS002" in clean.output
    (service / "src" / "jobs" / "newPoster.ts").write_text(DIRECT_WRITE)
    failing = _check(service)
    assert failing.exit_code == 1
    assert "src/jobs/newPoster.ts:1:" in failing.output and "error DS001 insert on tweets" in failing.output
    (service / "src" / "jobs" / "newPoster.ts").write_text(
        "// dualshift-ignore: DS001 one-off importer, deleted in week 6\n" + DIRECT_WRITE
    )
    ignored = _check(service)
    assert ignored.exit_code == 0
    assert "note DS900 DS001 ignored: one-off importer, deleted in week 6" in ignored.output


def test_a_baseline_accepts_todays_findings_and_fails_only_new_ones(service: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    assert _check(service, "--write-baseline", str(baseline)).exit_code == 0
    assert _check(service).exit_code == 1  # the fixture's unwrapped writes
    assert _check(service, "--baseline", str(baseline)).exit_code == 0
    (service / "src" / "jobs" / "newPoster.ts").write_text(DIRECT_WRITE)
    result = _check(service, "--baseline", str(baseline), "--format", "json")
    assert result.exit_code == 1
    findings = json.loads(result.stdout)["findings"]
    assert [(f["rule"], f["file"]) for f in findings if f["level"] == "error"] == [("DS001", "src/jobs/newPoster.ts")]
    baseline.write_text("not json")
    broken = _check(service, "--baseline", str(baseline))
    assert broken.exit_code == 2 and "not a dualshift baseline" in broken.output


def test_after_cleanup_old_names_are_findings_with_the_new_name_and_mapping(service: Path) -> None:
    result = _check(service, "--stage", "cleaned", "--format", "json")
    findings = json.loads(result.stdout)["findings"]
    reads = [f for f in findings if f["rule"] == "DS004" and f["table"] == "tweet_metrics"]
    assert reads and "read engagement_metrics instead (like_count → likes" in reads[0]["message"]
    assert any(f["rule"] == "DS003" and f["level"] == "error" for f in findings)
    assert not any(f["rule"] in ("DS001", "DS002") for f in findings)


def test_github_and_gitlab_formats(service: Path) -> None:
    github = _check(service, "--format", "github").stdout.splitlines()
    assert github and all(line.startswith(("::error file=", "::warning file=")) for line in github)
    gitlab = json.loads(_check(service, "--format", "gitlab").stdout)
    assert {issue["severity"] for issue in gitlab} == {"major", "minor"}
    assert all(issue["location"]["path"] and issue["fingerprint"] for issue in gitlab)


@pytest.mark.skipif(not SARIF.exists(), reason="npm packages not installed (bash .ci/setup)")
def test_sarif_output_passes_the_sarif_validator(service: Path, tmp_path: Path) -> None:
    (service / "src" / "jobs" / "newPoster.ts").write_text(
        "// dualshift-ignore: DS001 one-off importer\n" + DIRECT_WRITE
    )
    report = tmp_path / "check.sarif"
    assert _check(service, "--format", "sarif", "--out", str(report)).exit_code == 1
    document = json.loads(report.read_text())
    assert {r["ruleId"] for r in document["runs"][0]["results"]} == {"DS001", "DS002", "DS900"}
    validated = tmp_path / "validation.sarif"
    subprocess.run(
        [str(SARIF), "validate", str(report), "--output", str(validated), "--log", "ForceOverwrite"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    problems = json.loads(validated.read_text())["runs"][0].get("results", [])
    assert [p for p in problems if p.get("level", "warning") == "error"] == []


def test_the_pre_commit_hook_runs_under_the_real_pre_commit(service: Path) -> None:
    if subprocess.run(["git", "-C", str(REPO), "rev-parse"], capture_output=True).returncode != 0:
        pytest.skip("dualshift's own checkout is not a git repository: pre-commit try-repo needs one")
    env = {
        **os.environ,
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
        "PRE_COMMIT_HOME": str(service.parent / "pc"),
    }
    (service / "src" / "jobs" / "newPoster.ts").write_text(DIRECT_WRITE)
    _git(service, "add", "src/jobs/newPoster.ts")
    hook = ["pre-commit", "try-repo", str(REPO), "dualshift-check-system", "--files", "src/jobs/newPoster.ts"]
    run = subprocess.run(hook, cwd=service, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "src/jobs/newPoster.ts:1:" in run.stdout and "DS001" in run.stdout
    (service / "src" / "jobs" / "newPoster.ts").write_text(
        "// dualshift-ignore: DS001 one-off importer\n" + DIRECT_WRITE
    )
    _git(service, "add", "src/jobs/newPoster.ts")
    passed = subprocess.run(hook, cwd=service, env=env, capture_output=True, text=True, timeout=300)
    assert passed.returncode == 0, passed.stdout + passed.stderr
