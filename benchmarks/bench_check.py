"""`dualshift check` on a pull request: a warm scan cache, ten files changed, the whole tree checked.

    .venv/bin/python benchmarks/bench_check.py --files 50000

Generates the synthetic service (benchmarks/gen_tree.py), a plan naming ten of its tables as old tables,
runs `dualshift check` once to warm the cache (the CI cache a pull request restores), changes ten files,
then times `dualshift check` as a CI step runs it: a fresh process, the command line, the whole tree.
Target: under 2 s. Then every file is rewritten with the same bytes and a new mtime (what a fresh checkout
does) and the check timed again: the content hashes keep it warm.
"""

from __future__ import annotations

import argparse
import os
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


def timed_check(root: Path, env: dict[str, str]) -> tuple[float, int]:
    script = REPO / ".venv" / "bin" / "dualshift"
    program = [str(script)] if script.exists() else [sys.executable, "-m", "dualshift"]
    command = [*program, "check", str(root), "--plan", str(root / "plan.toml")]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, result.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=50_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dualshift-check-bench-"))
    try:
        root = generate(work / "tree", args.files)
        (root / "plan.toml").write_text(PLAN)
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "PYTHONPATH": str(REPO)}
        cold, _ = timed_check(root, env)
        sources = sorted(root.rglob("*.ts"))
        for path in sources[:: max(1, len(sources) // 10)][:10]:
            path.write_text(path.read_text() + "\nexport const touched = (db: any) => db.from('table_000').delete();\n")
        warm, code = timed_check(root, env)
        unchanged, _ = timed_check(root, env)
        for path in sources:
            path.write_bytes(path.read_bytes())
        checkout, _ = timed_check(root, env)
        print(
            f"{args.files} files: cold check {cold:.1f} s; after 10 changed files, warm cache: {warm:.2f} s"
            f" (exit {code}); nothing changed: {unchanged:.2f} s; after a checkout (same bytes, new mtimes):"
            f" {checkout:.2f} s"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
