"""`dualshift check` on a pull request: a warm scan cache, ten files changed, the whole tree checked.

    .venv/bin/python benchmarks/bench_check.py --files 50000

Generates the synthetic service (benchmarks/gen_tree.py), a plan naming ten of its tables as old tables,
runs `dualshift check` once to warm the cache (the CI cache a pull request restores), changes ten files,
then times `dualshift check` as a CI step runs it: a fresh process, the command line, the whole tree.
Target: under 2 s. Then the same with nothing changed, and after the changes are committed and the whole tree
checked out afresh by git (every file rewritten, new mtimes: what a CI runner's checkout does), and after
every file is rewritten with the same bytes outside git (each one is then read and hashed).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from gen_tree import TABLES, generate  # noqa: E402

PLAN = """version = 1
name = "bench"

[[tables]]
name = "merged"
key = ["id"]
columns = [{ name = "id", type = "bigint", nullable = false }]
""" + "".join(f'\n  [[tables.sources]]\n  table = "{t}"\n  key = ["id"]\n' for t in TABLES[:10])


def timed_check(root: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """Wall time and CPU time (user + system) of one `dualshift check` process, and its exit code."""
    script = REPO / ".venv" / "bin" / "dualshift"
    program = [str(script)] if script.exists() else [sys.executable, "-m", "dualshift"]
    command = [*program, "check", str(root), "--plan", str(root / "plan.toml")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, result.returncode


def change_ten(sources: list[Path], round_: int) -> None:
    for path in sources[round_ :: max(1, len(sources) // 10)][:10]:
        path.write_text(
            path.read_text() + f"\nexport const touched{round_} = (db: any) => db.from('table_000').delete();\n"
        )


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=b@b", "-c", "user.name=b", *args], cwd=root, check=True, capture_output=True
    )


def fresh_checkout(root: Path) -> None:
    for path in root.rglob("*.ts"):
        path.unlink()
    git(root, "checkout", "--", ".")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3, help="warm checks, each after ten more changed files")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dualshift-check-bench-"))
    try:
        root = generate(work / "tree", args.files)
        (root / "plan.toml").write_text(PLAN)
        git(root, "init", "-q")
        git(root, "add", "-A")
        git(root, "commit", "-qm", "base")
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "PYTHONPATH": str(REPO)}
        cold = timed_check(root, env)
        print(f"{args.files} files, load average {os.getloadavg()[0]:.1f}")
        print(f"cold check: {cold[0]:.1f} s wall, {cold[1]:.1f} s CPU")
        sources = sorted(root.rglob("*.ts"))
        for round_ in range(args.rounds):
            change_ten(sources, round_)
            wall, cpu, code = timed_check(root, env)
            print(
                f"warm cache, ten files changed (round {round_ + 1}): {wall:.2f} s wall, {cpu:.2f} s CPU (exit {code})"
            )
        wall, cpu, _ = timed_check(root, env)
        print(f"warm cache, nothing changed: {wall:.2f} s wall, {cpu:.2f} s CPU")
        git(root, "commit", "-qam", "changed files")
        fresh_checkout(root)
        wall, cpu, _ = timed_check(root, env)
        print(f"after a fresh git checkout of the whole tree: {wall:.2f} s wall, {cpu:.2f} s CPU")
        for path in sources:
            path.write_bytes(path.read_bytes())
        wall, cpu, _ = timed_check(root, env)
        print(f"every file rewritten outside git (same bytes, new mtimes): {wall:.2f} s wall, {cpu:.2f} s CPU")
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
