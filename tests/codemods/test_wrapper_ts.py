"""The generated TypeScript wrapper: type-checked with tsc --strict against the real supabase-js types,
and its behaviour tested with node's test runner against the real client."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualshift.cli import app

REPO = Path(__file__).resolve().parents[2]
PLAN = REPO / "fixtures" / "xbot" / "dualshift.toml"
TSC = REPO / "node_modules" / ".bin" / "tsc"
NODE_TESTS = Path(__file__).parent / "node" / "wrapper.test.cjs"
COALESCE_NODE_TESTS = Path(__file__).parent / "node" / "wrapper_coalesce.test.cjs"

pytestmark = pytest.mark.skipif(not TSC.exists(), reason="npm packages not installed (bash .ci/setup)")

CALLER = """
import { createClient } from '@supabase/supabase-js';
import { dualWrite } from './dualWrite';

interface Database {
  public: {
    Tables: {
      content_metadata: {
        Row: { decision_id: string; content: string; status: string };
        Insert: { decision_id?: string; content: string; status?: string };
        Update: { decision_id?: string; content?: string; status?: string };
        Relationships: [];
      };
    };
    Views: {};
    Functions: {};
    Enums: {};
    CompositeTypes: {};
  };
}

const supabase = createClient<Database>('http://localhost', 'key');

export async function typed(): Promise<string> {
  const { data, error } = await dualWrite(supabase)
    .from('content_metadata')
    .insert({ content: 'x' })
    .select('decision_id, status')
    .single();
  if (error) throw error;
  const rows = await dualWrite(supabase).from('content_metadata').select('content').eq('status', 'queued');
  const first: string | undefined = rows.data?.[0]?.content;
  return data.decision_id + (first ?? '');
}
"""


def _tsc(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TSC), "--strict", "--target", "es2022", "--skipLibCheck", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _generated(directory: Path, plan: Path) -> Path:
    (directory / "node_modules").symlink_to(REPO / "node_modules")
    result = CliRunner().invoke(
        app, ["generate", "wrapper", "--plan", str(plan), "--lang", "ts", "--out", str(directory / "dualWrite.ts")]
    )
    assert result.exit_code == 0, result.output
    return directory


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return _generated(tmp_path_factory.mktemp("wrapper"), PLAN)


def _coalesce_plan(directory: Path) -> Path:
    """The xbot plan with content_queue merging its twins column by column."""
    head = 'name = "content_queue"\nkey = ["decision_id"]\n'
    text = PLAN.read_text()
    assert head in text
    plan = directory / "dualshift.toml"
    plan.write_text(text.replace(head, head + 'precedence = "coalesce"\n', 1))
    return plan


def _node_tests(project: Path, tests: Path) -> subprocess.CompletedProcess[str]:
    build = project / "build"
    result = _tsc(project, "--module", "commonjs", "--outDir", str(build), "dualWrite.ts")
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.copy(tests, project / tests.name)
    return subprocess.run(
        ["node", "--test", tests.name],
        cwd=project,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "WRAPPER_DIR": str(build)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_wrapper_and_a_typed_caller_pass_tsc_strict(project: Path) -> None:
    (project / "caller.ts").write_text(CALLER)
    result = _tsc(
        project, "--noEmit", "--module", "nodenext", "--moduleResolution", "nodenext", "dualWrite.ts", "caller.ts"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_tsc_catches_a_caller_that_misuses_the_wrapped_client(project: Path) -> None:
    """The wrapped client keeps the real types: a wrong column is still a compile error."""
    (project / "bad_caller.ts").write_text(CALLER.replace("insert({ content: 'x' })", "insert({ contnt: 'x' })"))
    result = _tsc(
        project, "--noEmit", "--module", "nodenext", "--moduleResolution", "nodenext", "dualWrite.ts", "bad_caller.ts"
    )
    assert result.returncode != 0
    assert "contnt" in result.stdout


def test_wrapper_behaviour_under_node(project: Path) -> None:
    run = _node_tests(project, NODE_TESTS)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 12" in run.stdout


def test_a_merging_table_is_left_to_the_sync_triggers(tmp_path: Path) -> None:
    """Under precedence = "coalesce" the wrapper skips content_queue's write and still writes the others;
    the module still passes tsc --strict with a typed caller."""
    project = _generated(tmp_path, _coalesce_plan(tmp_path))
    (project / "caller.ts").write_text(CALLER)
    checked = _tsc(
        project, "--noEmit", "--module", "nodenext", "--moduleResolution", "nodenext", "dualWrite.ts", "caller.ts"
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    run = _node_tests(project, COALESCE_NODE_TESTS)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 2" in run.stdout
