"""The codemods in a monorepo: imports that resolve in each package, or a refusal with the reason."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.codemods.import_target import ImportTarget, UnresolvableImport

REPO = Path(__file__).resolve().parents[2]
MONOREPO = REPO / "fixtures" / "monorepo"
PLAN = str(REPO / "fixtures" / "xbot" / "dualshift.toml")
TSC = REPO / "node_modules" / ".bin" / "tsc"


@pytest.fixture
def monorepo(tmp_path: Path) -> Path:
    root = tmp_path / "acme"
    shutil.copytree(MONOREPO, root)
    (root / "node_modules").mkdir()
    (root / "node_modules" / "@supabase").symlink_to(REPO / "node_modules" / "@supabase")
    (root / ".gitignore").write_text("node_modules/\n.dualshift/\ndist/\n*.tsbuildinfo\n")
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run(["git", *command], cwd=root, check=True, capture_output=True)
    return root


def test_imports_follow_tsconfig_paths_and_never_climb_into_another_package(monorepo: Path) -> None:
    wrapper = "packages/db/src/dualWrite.ts"
    target = ImportTarget(monorepo, wrapper)
    assert target.specifier_for("apps/web/src/publish.ts") == "@acme/db/dualWrite"  # from apps/web's paths
    assert target.specifier_for("packages/db/src/index.ts") == "./dualWrite"  # same package: relative
    with pytest.raises(UnresolvableImport, match="in package packages/db, not in this file's package apps/worker"):
        target.specifier_for("apps/worker/src/metrics.ts")
    assert ImportTarget(monorepo, wrapper, "@acme/db/dualWrite").specifier_for("apps/worker/src/m.ts") == (
        "@acme/db/dualWrite"
    )
    per_package = ImportTarget(monorepo, "src/db/dualWrite.ts", per_package=True)
    assert per_package.wrapper_for("apps/worker/src/metrics.ts") == "apps/worker/src/db/dualWrite.ts"
    assert per_package.specifier_for("apps/worker/src/metrics.ts") == "./db/dualWrite"


@pytest.mark.skipif(not TSC.exists(), reason="npm packages not installed (bash .ci/setup)")
def test_wrap_a_monorepo_then_tsc_b_builds_every_package(monorepo: Path) -> None:
    wrapper = "packages/db/src/dualWrite.ts"
    runner = CliRunner()
    generated = runner.invoke(app, ["generate", "wrapper", "--plan", PLAN, "--out", str(monorepo / wrapper)])
    assert generated.exit_code == 0, generated.output
    worker_before = (monorepo / "apps/worker/src/metrics.ts").read_bytes()
    wrapped = runner.invoke(app, ["codemod", "wrap", str(monorepo), "--plan", PLAN, "--wrapper", wrapper, "--apply"])
    assert wrapped.exit_code == 1  # one file refused
    assert "1 changed" in wrapped.output and "1 failed" in wrapped.output
    assert "apps/worker/src/metrics.ts: the wrapper packages/db/src/dualWrite.ts is in package" in wrapped.output
    assert "import { dualWrite } from '@acme/db/dualWrite';" in (monorepo / "apps/web/src/publish.ts").read_text()
    assert (monorepo / "apps/worker/src/metrics.ts").read_bytes() == worker_before  # refused: untouched
    build = subprocess.run([str(TSC), "-b"], cwd=monorepo, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout


def test_a_broken_tsconfig_is_named_not_read_as_no_paths(monorepo: Path) -> None:
    (monorepo / "apps/web/tsconfig.json").write_text('{ "compilerOptions": { "paths": ')
    with pytest.raises(UnresolvableImport, match=r"apps/web/tsconfig.json: cannot read its compilerOptions.paths"):
        ImportTarget(monorepo, "packages/db/src/dualWrite.ts").specifier_for("apps/web/src/publish.ts")
