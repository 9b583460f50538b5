"""`dualshift demo` end to end: the whole migration under live writers, parity 100 %, nothing lost."""

from __future__ import annotations

from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.executor.demo import run_demo
from dualshift.executor.pgserver import fresh_database


def test_demo_ends_with_full_parity_and_no_lost_row(admin_dsn: str) -> None:
    with fresh_database(admin_dsn, "dualshift_demo_test") as dsn:
        result = run_demo(dsn, rows=2000, writers=2)
    assert result.parity_passed
    assert result.rows_written_by_writers > 0
    assert result.rows_lost == 0
    assert [p.phase for p in result.phases] == [
        "old tables",
        "create",
        "backfill",
        "verify",
        "switch-reads 10%",
        "switch-reads 50%",
        "switch-reads 100%",
        "verify (writers stopped)",
        "cleanup",
    ]
    assert result.tables["content_queue"] == 2600 + result.rows_written_by_writers


def test_demo_command_prints_the_phase_report(admin_dsn: str) -> None:
    with fresh_database(admin_dsn, "dualshift_demo_cli") as dsn:
        outcome = CliRunner().invoke(app, ["demo", "--dsn", dsn, "--rows", "1000", "--writers", "1"])
    assert outcome.exit_code == 0, outcome.output
    assert "parity 100 %" in outcome.output and "0 lost" in outcome.output


def test_demo_on_a_database_that_is_not_empty_says_so_in_one_line(dsn: str) -> None:
    outcome = CliRunner().invoke(app, ["demo", "--dsn", dsn, "--rows", "100", "--writers", "1"])
    assert outcome.exit_code == 2
    (line,) = outcome.output.strip().splitlines()
    assert "the database already holds content_metadata" in line and "omit --dsn" in line
