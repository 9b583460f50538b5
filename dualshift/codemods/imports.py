"""Import statements in TypeScript / JavaScript files, written in the file's own style."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

_IMPORT_LINE = re.compile(r"^import\b[^\n]*?from\s+(['\"])[^'\"]+\1[^\n]*$|^import\s+(['\"])[^'\"]+\2[^\n]*$", re.M)
_REQUIRE_LINE = re.compile(r"^(?:const|let|var)\s+[^\n]*=\s*require\((['\"])[^'\"]+\1\)[^\n]*$", re.M)


@dataclass(frozen=True)
class Style:
    quote: str  # ' or "
    semicolon: bool
    commonjs: bool


def detect_style(source: str) -> Style:
    """Quote and semicolon habits of a file, read from its imports (or its strings when it has none)."""
    imports = list(_IMPORT_LINE.finditer(source))
    requires = list(_REQUIRE_LINE.finditer(source))
    sample = imports[0].group(0) if imports else requires[0].group(0) if requires else None
    if sample is not None:
        quote = '"' if '"' in sample and "'" not in sample else "'"
        semicolon = sample.rstrip().endswith(";")
    else:
        quote = '"' if source.count('"') > source.count("'") else "'"
        semicolon = bool(re.search(r";\s*$", source, re.M))
    return Style(quote, semicolon, commonjs=bool(requires) and not imports)


def module_specifier(from_file: str, target: str) -> str:
    """`src/jobs/planJob.ts` importing `src/db/dualWrite.ts` → `../db/dualWrite`."""
    target = re.sub(r"\.(ts|tsx|mts|cts|js|jsx|mjs|cjs)$", "", target)
    relative = posixpath.relpath(target, posixpath.dirname(from_file) or ".")
    return relative if relative.startswith(".") else f"./{relative}"


def import_line(name: str, specifier: str, style: Style) -> str:
    end = ";" if style.semicolon else ""
    q = style.quote
    if style.commonjs:
        return f"const {{ {name} }} = require({q}{specifier}{q}){end}"
    return f"import {{ {name} }} from {q}{specifier}{q}{end}"


def has_import(source: str, name: str, specifier: str) -> bool:
    pattern = rf"\b{re.escape(name)}\b[^\n]*(from\s+|require\()['\"]{re.escape(specifier)}['\"]"
    return re.search(pattern, source) is not None


def add_import(source: str, name: str, specifier: str) -> str:
    """Add the import once, after the last top-level import (or at the top), in the file's style."""
    if has_import(source, name, specifier):
        return source
    style = detect_style(source)
    line = import_line(name, specifier, style)
    anchors = list(_REQUIRE_LINE.finditer(source)) if style.commonjs else list(_IMPORT_LINE.finditer(source))
    if anchors:
        end = _statement_end(source, anchors[-1].end())
        return source[:end] + "\n" + line + source[end:]
    return line + "\n" + source


def _statement_end(source: str, position: int) -> int:
    newline = source.find("\n", position)
    return len(source) if newline == -1 else newline


def remove_import(source: str, name: str, specifier: str) -> str:
    """Drop the import of `name` from `specifier` (the whole line when it imports nothing else)."""
    pattern = re.compile(
        rf"^(?:import\s*\{{\s*{re.escape(name)}\s*\}}\s*from\s*|(?:const|let|var)\s*\{{\s*{re.escape(name)}\s*\}}\s*=\s*require\()"
        rf"['\"]{re.escape(specifier)}['\"]\)?;?[ \t]*\n",
        re.M,
    )
    return pattern.sub("", source, count=1)
