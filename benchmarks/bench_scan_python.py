"""The Python scanner against a bare `ast.parse` of the same files, and the cache after a checkout.

    .venv/bin/python benchmarks/bench_scan_python.py --files 400

Generates a supabase-py service of N modules (one in five runs table calls, the others hold models,
helpers and constants, as real services do), then times in one run:
- `ast.parse` of every file (the floor: what any Python tool pays to read the code);
- a cold `dualshift scan` (no cache, one worker) of the tree;
- a warm scan after every file was rewritten with the same bytes and new times (a `git checkout`).
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import tempfile
import time
from pathlib import Path

from dualshift.analyzer.scan import scan_tree

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


def timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    value = action()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=400)
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
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
