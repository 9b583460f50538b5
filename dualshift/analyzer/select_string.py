"""PostgREST strings inside query-builder calls: select lists and `or` / `not` filter expressions."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CAST = re.compile(r"::\w+$")
_JSON_PATH = re.compile(r"(->>?|#>>?).*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SelectList:
    columns: tuple[str, ...]  # plain columns of the top-level resource (without `*`)
    embedded: tuple[str, ...]  # tables read through embedded resources, nested ones included


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split on separators that are not inside parentheses or double quotes."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == separator and depth == 0 and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _column_name(item: str) -> str | None:
    item = _CAST.sub("", item.strip())
    if ":" in item:
        item = item.split(":", 1)[1]  # alias:column
    item = _JSON_PATH.sub("", item).strip().strip('"')
    return item if _IDENT.match(item) else None


def _embedded_table(item: str) -> tuple[str | None, str]:
    """`author:users!inner(name, id)` → ("users", "name, id")."""
    head, _, rest = item.partition("(")
    inner = rest[: rest.rfind(")")] if ")" in rest else rest
    if ":" in head:
        head = head.split(":", 1)[1]
    table = head.split("!", 1)[0].strip().strip('"')
    return (table if _IDENT.match(table) else None), inner


def parse_select(text: str) -> SelectList:
    columns: list[str] = []
    embedded: list[str] = []
    for item in split_top_level(" ".join(text.split())):
        if item.startswith("..."):
            item = item[3:]
        if "(" in item:
            table, inner = _embedded_table(item)
            if table:
                embedded.append(table)
                embedded.extend(parse_select(inner).embedded)
            continue
        name = _column_name(item)
        if name and name not in columns:
            columns.append(name)
    return SelectList(tuple(columns), tuple(dict.fromkeys(embedded)))


def filter_column(text: str | None) -> str | None:
    """The column a filter names: `metadata->_verified` and `data->>'kind'` filter on `metadata`, `data`."""
    if text is None:
        return None
    bare = _JSON_PATH.sub("", _CAST.sub("", text.strip())).strip().strip('"')
    return bare if _IDENT.match(bare) else text


def columns_in_filter_expression(text: str) -> tuple[str, ...]:
    """Columns named in an `or('a.eq.1,and(b.gt.2,c.is.null)')` expression."""
    found: list[str] = []
    for item in split_top_level(text):
        head, _, rest = item.partition("(")
        if head in ("and", "or", "not.and", "not.or") and rest:
            found.extend(columns_in_filter_expression(rest[: rest.rfind(")")]))
            continue
        name = item.split(".", 1)[0].strip().strip('"')
        name = _JSON_PATH.sub("", name)
        if _IDENT.match(name) and name not in found:
            found.append(name)
    return tuple(dict.fromkeys(found))
