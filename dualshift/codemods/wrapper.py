"""Generate the dual-write wrapper module from the plan (jinja2 templates, one per language)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jinja2

from dualshift import __version__
from dualshift.plan import Plan

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("dualshift.codemods", "templates"),
    autoescape=False,  # code, not HTML; every plan value is rendered through JSON
    keep_trailing_newline=True,
)
LANGUAGES = ("ts", "py")
DEFAULT_TIMEOUT_MS = 2000
DEFAULT_FLAGS_TTL_MS = 5000


def source_maps(plan: Plan) -> dict[str, dict[str, Any]]:
    """old table → how its rows and filters map onto the new table (what the wrapper needs)."""
    maps: dict[str, dict[str, Any]] = {}
    for table in plan.tables:
        for position, source in enumerate(table.sources):
            maps[source.table] = {
                "newTable": table.name,
                "newSchema": plan.new_schema,
                "primary": position == 0,
                "key": list(table.key),
                "sourceKey": list(source.key),
                "columns": table.column_mapping(source.table),
                "constants": dict(source.constants),
                # The merge of several sources' values is the database's (merge.py): only its triggers write.
                "mirroredByTriggers": table.merges_sources,
            }
    return maps


def render_typescript(plan: Plan, flags_schema: str = "dualshift", timeout_ms: int = DEFAULT_TIMEOUT_MS) -> str:
    return _ENV.get_template("dualWrite.ts.j2").render(
        version=__version__,
        plan_name=Path(plan.path).name,
        plan_json=json.dumps(source_maps(plan), indent=2, sort_keys=True),
        flags_schema=flags_schema,
        timeout_ms=timeout_ms,
        flags_ttl_ms=DEFAULT_FLAGS_TTL_MS,
    )


def render_wrapper(plan: Plan, language: str, **options: Any) -> str:
    if language == "ts":
        return render_typescript(plan, **options)
    if language == "py":
        from dualshift.codemods.wrapper_python import render_python_wrapper

        return render_python_wrapper(plan, **options)
    raise ValueError(f"unknown wrapper language {language!r} (choose ts or py)")


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)
