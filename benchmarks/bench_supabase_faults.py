"""The long variant of the Supabase end-to-end and fault-injection tests: more rows, more writers,
every fault point with both recoveries.

    .venv/bin/python benchmarks/bench_supabase_faults.py --rows 1200 --writers 2

Runs on the server at $DATABASE_URL or 127.0.0.1:5432 (or a throwaway cluster) and prints:
1. the whole story (tests/executor/test_supabase_e2e.py) with the ledger's figures and each check's
   verdict;
2. for every name in dualshift.executor.faults.POINTS and each recovery (resume: the same phase again;
   rollback: back to where nothing was created), whether the kill happened there and what the ledger
   found afterwards: rows lost, wrong and extra, and the application writes that failed.
Exit 1 when any check fails, a point is never reached, or a row is lost or wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dualshift.executor import faults  # noqa: E402
from dualshift.executor.pgserver import server  # noqa: E402
from tests.executor import ledger as lg  # noqa: E402
from tests.executor.supabase_scenario import run_supabase_migration, verdicts  # noqa: E402
from tests.executor.test_fault_injection import crash_and_recover, stages  # noqa: E402


def story(admin: str, rows: int, writers: int) -> bool:
    started = time.monotonic()
    run = run_supabase_migration(admin, rows, writers, report=lambda line: print(f"  {line}", flush=True))
    print(f"story: {rows} content rows, {3 * writers} writers, {time.monotonic() - started:.1f} s")
    for step in run.steps:
        print(f"  {step.line()[:160]} ({step.seconds:.1f} s)")
    print(f"  ledger: {json.dumps(run.ledger.summary())}")
    for point, per in run.findings.items():
        figures = {k: (f.lost, f.wrong, f.extra) for k, f in per.items() if not f.clean}
        print(f"  {point}: " + (json.dumps(figures) if figures else "every row where it must be"))
    found = verdicts(run)
    for name, problem in found.items():
        print(f"  {'ok  ' if problem is None else 'FAIL'} {name}" + ("" if problem is None else f": {problem}"))
    return not any(found.values())


def matrix(admin: str, rows: int, writers: int, recoveries: list[str]) -> bool:
    good = True
    with tempfile.TemporaryDirectory(prefix="dualshift-faults-") as folder, stages(admin, Path(folder), rows) as built:
        print(f"\nfault matrix: {rows} content rows, {3 * writers} writers")
        print(f"  {'point':28} {'recovery':9} {'killed':7} {'lost':>5} {'wrong':>6} {'extra':>6} {'failed':>7} seconds")
        for point in faults.POINTS:
            for recovery in recoveries:
                began = time.monotonic()
                outcome = crash_and_recover(built, point, recovery, Path(folder), writers)
                totals = [lg.total(outcome.findings, k) for k in ("lost", "wrong", "extra")]
                checked = bool(outcome.findings)
                good &= outcome.killed and checked and not any(totals)
                shown = [str(n) if checked else "-" for n in totals]
                print(
                    f"  {point:28} {recovery:9} {'yes' if outcome.killed else 'NO':7} {shown[0]:>5} {shown[1]:>6}"
                    f" {shown[2]:>6} {outcome.failures:>7} {time.monotonic() - began:.1f}",
                    flush=True,
                )
    return good


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1200, help="content rows of the fixture")
    parser.add_argument("--writers", type=int, default=2, help="writers of each kind (content, posts, metrics)")
    parser.add_argument("--recoveries", nargs="+", default=["resume", "rollback"], choices=["resume", "rollback"])
    parser.add_argument("--skip-story", action="store_true", help="only the fault matrix")
    args = parser.parse_args()
    with server() as admin:
        good = args.skip_story or story(admin, args.rows, args.writers)
        good = matrix(admin, args.rows, args.writers, args.recoveries) and good
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
