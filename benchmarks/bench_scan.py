"""Time `dualshift scan` against ast-grep's bare match and the TypeScript parser on synthetic trees.

    .venv/bin/python benchmarks/bench_scan.py --sizes 1000 10000 50000

All three run in the same process tree on the same files; peak memory is the largest RSS of any child
(`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` read after each child, so each measurement is
isolated by running it in a fresh `python -c` wrapper).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from gen_tree import generate  # noqa: E402

WRAPPER = (
    "import resource, subprocess, sys, json;"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE);"
    "print(json.dumps({'rc': r.returncode, 'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
    " 'stderr': r.stderr.decode()[-300:]}))"
)


def measure(command: list[str]) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise RuntimeError(f"{command[0]} failed: {result['stderr']}")
    return {"seconds": round(elapsed, 3), "peak_mb": round(result["maxrss_kb"] / 1024, 1)}


def bench(size: int, trees: Path, jobs: int) -> dict:
    root = generate(trees / f"tree_{size}", size)
    out = Path(tempfile.mkdtemp()) / "map.json"
    cache = Path(tempfile.mkdtemp())
    dualshift = str(REPO / ".venv" / "bin" / "dualshift")
    base = [dualshift, "scan", str(root), "--out", str(out), "--jobs", str(jobs), "--quiet"]
    env_cache = ["env", f"XDG_CACHE_HOME={cache}"]
    rows = {
        "dualshift_cold": measure([*env_cache, *base]),
        "dualshift_warm": measure([*env_cache, *base]),
        "dualshift_nocache": measure([*base, "--no-cache"]),
        "ast_grep": measure(
            [str(REPO / "node_modules" / ".bin" / "ast-grep"), "run", "-p", "$A.from($B)", "--lang", "ts", str(root)]
        ),
        "ts_parse": measure(["node", str(REPO / "benchmarks" / "ts_parse.mjs"), str(root)]),
    }
    calls = len(json.loads(out.read_text())["calls"])
    shutil.rmtree(cache, ignore_errors=True)
    for row in rows.values():
        row["files_per_s"] = round(size / row["seconds"], 1)
    return {
        "files": size,
        "calls": calls,
        **rows,
        "ratio_vs_ast_grep": round(rows["dualshift_nocache"]["seconds"] / rows["ast_grep"]["seconds"], 2),
        "ratio_vs_ts_parse": round(rows["dualshift_nocache"]["seconds"] / rows["ts_parse"]["seconds"], 2),
        "warm_over_cold": round(rows["dualshift_warm"]["seconds"] / rows["dualshift_cold"]["seconds"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--trees", type=Path, default=REPO / "benchmarks" / "trees")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scan.json")
    args = parser.parse_args()
    results = [bench(size, args.trees, args.jobs) for size in args.sizes]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
