"""supabase-py call sites with LibCST (placeholder signature; implemented by the Python analyzer work)."""

from __future__ import annotations

from dualshift.analyzer.records import FileResult


def analyze_python(rel_path: str, source: bytes) -> FileResult:
    """Find every supabase-py query-builder chain in one Python file."""
    return FileResult(file=rel_path)
