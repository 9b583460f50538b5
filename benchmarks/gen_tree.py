"""Generate a deterministic synthetic TypeScript service of N files for the scan benchmark.

Each file looks like service code: imports, a class, multi-line Supabase chains over a few dozen
tables, false positives (Array.from, Buffer.from), 30-150 lines.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

TABLES = [f"table_{i:03d}" for i in range(130)]
FOLDERS = ["jobs", "posting", "learning", "metrics", "dashboard", "scrapers", "ai", "utils", "api", "services"]
COLUMNS = ["id", "decision_id", "tweet_id", "content", "status", "created_at", "likes", "score", "topic", "author"]


def _chain(rng: random.Random, indent: str) -> str:
    table = rng.choice(TABLES)
    cols = rng.sample(COLUMNS, 3)
    kind = rng.randrange(5)
    if kind == 0:
        body = f".select('{', '.join(cols)}')\n{indent}  .eq('{cols[0]}', value)\n{indent}  .limit(20)"
    elif kind == 1:
        body = (
            f".insert({{ {cols[0]}: value, {cols[1]}: 1, {cols[2]}: 'x' }})\n{indent}  .select()\n{indent}  .single()"
        )
    elif kind == 2:
        body = f".update({{ {cols[0]}: value }})\n{indent}  .eq('{cols[1]}', id)"
    elif kind == 3:
        body = f".upsert({{ {cols[0]}: value }}, {{ onConflict: '{cols[0]}' }})"
    else:
        body = f".delete()\n{indent}  .lt('{cols[2]}', cutoff)"
    return f"{indent}const {{ data, error }} = await this.supabase\n{indent}  .from('{table}')\n{indent}  {body};\n"


def render_file(index: int, rng: random.Random) -> str:
    lines = [
        "import { getSupabaseClient } from '../db/index';",
        "import { format } from '../utils/format';",
        "",
        f"export class Service{index} {{",
        "  private supabase = getSupabaseClient();",
        "",
    ]
    for method in range(rng.randint(3, 9)):
        lines.append(f"  async step{method}(value: string, id: number, cutoff: string) {{")
        lines.append("    const ids = Array.from(new Set([id, id + 1]));")
        lines.append("    let data: unknown = null;")
        # About 1.5 database calls per file, as in the seeds' service (962 queries in 687 files).
        if rng.random() < 0.25:
            lines.append("    {")
            lines.append(_chain(rng, "      ").rstrip("\n"))
            lines.append("      if (error) throw new Error(format(error.message));")
            lines.append("    }")
        for step in range(rng.randint(2, 8)):
            lines.append(f"    const v{step} = format(`${{value}}-{step}`, ids.length + {step});")
        lines.append("    const encoded = Buffer.from(String(ids.length)).toString('base64');")
        lines.append("    return { data, encoded };")
        lines.append("  }")
        lines.append("")
    lines.append("}")
    return "\n".join(lines) + "\n"


def generate(root: Path, count: int, seed: int = 42) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / ".complete-v2"
    if marker.exists() and marker.read_text() == f"{count} {seed}":
        return root
    for index in range(count):
        folder = root / "src" / FOLDERS[index % len(FOLDERS)] / f"group{index // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"service{index:05d}.ts").write_text(render_file(index, rng))
    marker.write_text(f"{count} {seed}")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    generate(args.root, args.files, args.seed)


if __name__ == "__main__":
    main()
