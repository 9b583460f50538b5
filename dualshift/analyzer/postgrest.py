"""The PostgREST query-builder vocabulary, shared by the analyzers, the codemods and the wrappers.

supabase-js spells methods in camelCase (`containedBy`); supabase-py in snake_case, with a trailing
underscore where the word is a Python keyword (`in_`, `is_`, `or_`, `not_`). Records use the
supabase-js names.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dualshift.analyzer.select_string import filter_column, split_top_level

WRITE_METHODS = ("insert", "upsert", "update", "delete")
COLUMN_FILTERS = frozenset(
    [
        "eq",
        "neq",
        "gt",
        "gte",
        "lt",
        "lte",
        "like",
        "ilike",
        "likeAllOf",
        "likeAnyOf",
        "ilikeAllOf",
        "ilikeAnyOf",
        "is",
        "in",
        "contains",
        "containedBy",
        "rangeGt",
        "rangeGte",
        "rangeLt",
        "rangeLte",
        "rangeAdjacent",
        "overlaps",
        "textSearch",
        "not",
        "filter",
    ]
)
_PYTHON_KEYWORDS = frozenset({"in", "is", "or", "not"})


def to_python(name: str) -> str:
    """`containedBy` → `contained_by`, `in` → `in_`."""
    snake = re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
    return f"{snake}_" if snake in _PYTHON_KEYWORDS else snake


def from_python(name: str) -> str:
    """`contained_by` → `containedBy`, `in_` → `in`."""
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(word.capitalize() for word in rest)


PYTHON_COLUMN_FILTERS = frozenset(to_python(name) for name in COLUMN_FILTERS)


def map_select_list(text: str, column: Callable[[str], str]) -> str:
    """A select string with its plain columns renamed; the new name keeps the old as alias
    (`topic` → `topic:raw_topic`) so that callers get the keys they expect. Embedded resources stay."""
    parts = []
    for item in split_top_level(text):
        if "(" in item or item.strip() == "*":
            parts.append(item)
            continue
        alias, _, name = item.rpartition(":")
        bare = name.split("::")[0].strip()
        mapped = column(bare)
        parts.append(item if mapped == bare else f"{alias or bare}:{name.replace(bare, mapped, 1).strip()}")
    return ", ".join(parts)


def map_filter_expression(text: str, column: Callable[[str], str]) -> str:
    """`a.eq.1,and(b.gt.2,c.is.null)` with every column name renamed."""

    def swap(match: re.Match) -> str:
        if match.group(2) in ("and", "or", "not"):
            return match.group(0)
        return match.group(1) + column(match.group(2))

    return re.sub(r"(^|[,(])([A-Za-z_][A-Za-z0-9_]*)(?=\.)", swap, text)


def map_filter_column(text: str, column: Callable[[str], str]) -> str:
    """A filter's column renamed, its JSON path kept: `metadata->_verified` → `meta->_verified`."""
    base = filter_column(text)
    if base is None or base == text:
        return column(text)
    return text.replace(base, column(base), 1)


def map_column_list(text: str, column: Callable[[str], str]) -> str:
    """`onConflict` lists: `tweet_id,measured_at` → `tweet_id,collected_at`."""
    return ",".join(column(c.strip()) for c in text.split(",") if c.strip())
