"""The Python scanner against a bare `ast.parse` of the same files, and the cache after a checkout.

    .venv/bin/python benchmarks/bench_scan_python.py --files 400

Generates a supabase-py service of N modules (one in five runs table calls, the others hold models,
helpers and constants, as real services do), then times in one run:
- `ast.parse` of every file (the floor: what any Python tool pays to read the code);
- a cold `dualshift scan` (no cache, one worker) of the tree;
- a warm scan after every file was rewritten with the same bytes and new times (a `git checkout`);
- then `--rounds` interleaved rounds of: a bare `ast.parse` loop that keeps no tree, a cold scan (no
  cache, one worker) of the Python tree, and a cold scan of as many TypeScript files from
  `gen_tree.py`: the Python path against the TypeScript path per file, measured side by side.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dualshift.analyzer.scan import scan_tree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_tree import generate as generate_typescript

CALLS = """
from worker.db.tables import CONTENT


def load_{n}(client, limit):
    rows = client.table(CONTENT).select("decision_id, content").eq("status", "queued").limit(limit).execute()
    client.table("posts").update({{"topic": "t{n}"}}).eq("decision_id", rows.data[0]["decision_id"]).execute()
    return client.from_("outcomes").insert({{"tweet_id": "{n}", "likes": {n}}}).execute()
"""

PLAIN = '''
from dataclasses import dataclass, field


@dataclass
class Model{n}:
    """A domain object with a few methods, as most modules of a service are."""

    name: str
    values: list[int] = field(default_factory=list)

    def total(self) -> int:
        return sum(v * {n} for v in self.values if v > 0)

    def describe(self) -> str:
        parts = [f"{{self.name}}:{{v}}" for v in self.values]
        return ", ".join(parts) or "empty"


def helper_{n}(items: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(((k, v) for k, v in items.items() if v % 2 == {n} % 2), key=lambda kv: kv[1])
'''


def generate(root: Path, files: int) -> list[Path]:
    (root / "worker" / "db").mkdir(parents=True)
    (root / "worker" / "db" / "tables.py").write_text('CONTENT = "content_metadata"\n')
    written = []
    for n in range(files):
        path = root / "worker" / f"pkg{n % 20}" / f"module_{n}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((CALLS if n % 5 == 0 else PLAIN).format(n=n) + PLAIN.format(n=n + 100_000) * 3)
        written.append(path)
    return written


def timed(action, clock=time.perf_counter) -> tuple[float, object]:
    start = clock()
    value = action()
    return clock() - start, value


def cpu_timed(action) -> tuple[float, object]:
    """CPU seconds of this process: on a shared machine, what the work costs rather than how long others
    kept the core (everything here runs in this one process: one worker)."""
    return timed(action, time.process_time)


def against_typescript(python_tree: Path, typescript_tree: Path, rounds: int) -> None:
    """Interleaved rounds of CPU time, so that a busy neighbour slows every measure alike; best and median."""
    python_files = sorted(python_tree.rglob("*.py"))
    typescript_files = sorted(typescript_tree.rglob("*.ts"))
    times: dict[str, list[float]] = {"parse": [], "python": [], "typescript": []}
    for _ in range(rounds):
        times["parse"].append(cpu_timed(lambda: [ast.parse(p.read_bytes()) and None for p in python_files])[0])
        times["python"].append(cpu_timed(lambda: scan_tree(python_tree, jobs=1, use_cache=False))[0])
        times["typescript"].append(cpu_timed(lambda: scan_tree(typescript_tree, jobs=1, use_cache=False))[0])
    counts = {"parse": len(python_files), "python": len(python_files), "typescript": len(typescript_files)}
    kib = {
        "python": sum(p.stat().st_size for p in python_files) / 1024,
        "typescript": sum(p.stat().st_size for p in typescript_files) / 1024,
    }
    print(f"{rounds} interleaved rounds; {counts['python']} Python files ({kib['python']:.0f} KiB),")
    print(f"{counts['typescript']} TypeScript files ({kib['typescript']:.0f} KiB); one worker, no cache, CPU time")
    per_file = {}
    for name, label in (
        ("parse", "bare ast.parse, Python"),
        ("python", "cold scan, Python"),
        ("typescript", "cold scan, TypeScript"),
    ):
        best, median = min(times[name]), statistics.median(times[name])
        per_file[name] = (best / counts[name], median / counts[name])
        print(
            f"{label:24} best {best:.3f} s ({1000 * per_file[name][0]:.2f} ms/file)"
            f"  median {median:.3f} s ({1000 * per_file[name][1]:.2f} ms/file)"
        )
    for index, which in ((0, "best"), (1, "median")):
        ratio = per_file["python"][index] / per_file["typescript"][index]
        floor = per_file["python"][index] / per_file["parse"][index]
        print(f"Python ÷ TypeScript per file ({which}): {ratio:.2f}x; Python scan ÷ bare ast.parse: {floor:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dualshift-pybench-"))
    cache = root.parent / f"{root.name}-cache"
    try:
        paths = generate(root / "tree", args.files)
        floor, _ = timed(lambda: [ast.parse(p.read_bytes()) for p in paths])
        cold, result = timed(lambda: scan_tree(root / "tree", jobs=1, cache_dir=cache))
        for number, path in enumerate(paths):
            path.write_bytes(path.read_bytes())
            os.utime(path, ns=(10**18 + number, 10**18 + number))
        warm, again = timed(lambda: scan_tree(root / "tree", jobs=1, cache_dir=cache))
        assert again.calls == result.calls
        print(f"{args.files} files, {len(result.calls)} calls")
        print(f"ast.parse of every file: {floor:.2f} s")
        print(f"cold dualshift scan:     {cold:.2f} s ({cold / floor:.1f}x ast.parse)")
        print(f"scan after a checkout:   {warm:.2f} s (same bytes, new times)")
        if args.rounds:
            against_typescript(root / "tree", generate_typescript(root / "ts", args.files), args.rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
