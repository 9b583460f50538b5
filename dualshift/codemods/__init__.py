"""Codemods: per-file, reviewable rewrites to and from the dual-write wrapper; the wrapper generator."""
