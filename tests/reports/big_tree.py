"""A generated TypeScript service at the size of a real one: 150 tables, 300 files, ~4 calls a file.

Tables come in families that share a name stem and columns (`content_metadata`,
`content_metadata_archive`, ...), so overlap clusters form; jobs write what services read, so
flows form. Deterministic for a seed.
"""

from __future__ import annotations

import random
from pathlib import Path

FOLDERS = ["jobs", "posting", "learning", "metrics", "dashboard", "scrapers", "ai", "utils", "api", "services"]
STEMS = [
    "content", "posted", "tweet", "engagement", "user", "reply", "schedule", "learning", "metric", "bandit",
    "account", "follower", "thread", "topic", "prompt",
]  # fmt: skip
SUFFIXES = ["metadata", "queue", "history", "archive", "stats", "events", "snapshots", "log", "cache", "v2"]
# Synthetic column words; tables of one stem and one suffix group (a third of the suffixes) share
# their columns, so overlap clusters of three or four tables form, as in real services.
WORDS = [a + b for a in ("bo", "ka", "mi", "ru", "te", "zo", "pa", "li", "ne", "su", "go", "fa") for b in ("rel", "dix", "mon", "tav", "sor", "pek", "lun", "gar", "vin", "tos")]  # fmt: skip


def columns_of(table: str) -> list[str]:
    stem, suffix = table.split("_", 1)
    group = STEMS.index(stem) * 4 + SUFFIXES.index(suffix) // 3
    return [f"{stem}_id", WORDS[2 * group], WORDS[2 * group + 1]]


def table_names(count: int = 150) -> list[str]:
    return [f"{STEMS[i % len(STEMS)]}_{SUFFIXES[(i // len(STEMS)) % len(SUFFIXES)]}" for i in range(count)]


def _chain(table: str, operation: str, rng: random.Random) -> str:
    columns = rng.sample(columns_of(table), 3)
    if operation == "select":
        body = f".select('{', '.join(columns)}')\n      .eq('{columns[0]}', value)"
    elif operation == "insert":
        body = f".insert({{ {columns[0]}: value, {columns[1]}: 1 }})"
    elif operation == "update":
        body = f".update({{ {columns[0]}: value }})\n      .eq('{columns[1]}', id)"
    elif operation == "upsert":
        body = f".upsert({{ {columns[0]}: value }}, {{ onConflict: '{columns[0]}' }})"
    else:
        body = f".delete()\n      .lt('{columns[2]}', value)"
    return f"    const {{ data, error }} = await this.supabase\n      .from('{table}')\n      {body};\n    if (error) throw error;\n"


def generate(root: Path, files: int = 300, tables: int = 150, seed: int = 7) -> Path:
    rng = random.Random(seed)
    names = table_names(tables)
    for index in range(files):
        folder = FOLDERS[index % len(FOLDERS)]
        # Every table is written by at least one file and read by at least one other.
        own = [names[(index * 2 + k) % tables] for k in range(2)]
        operations = [("insert" if folder == "jobs" else rng.choice(["update", "upsert", "delete"]), own[0])]
        operations.append(("select", names[(index * 2 + 3) % tables]))
        operations += [(rng.choice(["select", "select", "insert", "update"]), rng.choice(names)) for _ in range(2)]
        methods = "\n".join(
            f"  async step{i}(value: string, id: number) {{\n{_chain(table, op, rng)}    return data;\n  }}\n"
            for i, (op, table) in enumerate(operations)
        )
        path = root / "src" / folder / f"{folder}Service{index:03d}.ts"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "import { getSupabaseClient } from '../db';\n\n"
            f"export class {folder.title()}Service{index:03d} {{\n  private supabase = getSupabaseClient();\n\n"
            f"{methods}}}\n"
        )
    (root / "package.json").write_text('{"name": "big-service", "private": true}\n')
    return root
