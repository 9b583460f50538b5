"""The schema of a database as comparable data: two databases built differently (a snapshot restored,
migration files replayed) must give equal dictionaries. Nothing here depends on OIDs or on the order
objects were created in; names and definitions only, read with the search_path pinned so that every
name in a definition comes out schema-qualified. A missing ACL is read as the default it stands for
(pg_dump writes nothing for an ACL equal to the default, however it was reached).
"""

from __future__ import annotations

from typing import Any

import psycopg

# Never compared: PostgreSQL's own schemas.
SYSTEM = ("pg_catalog", "information_schema", "pg_toast")

QUERIES = {
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
          coalesce(c.reloptions, '{}'), pg_get_userbyid(c.relowner), coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))::text[]
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname <> ALL(%(skip)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')""",
    "columns": """
        SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
          pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, a.attnum
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname <> ALL(%(skip)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT n.nspname, c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid), k.convalidated
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname <> ALL(%(skip)s)""",
    "indexes": """
        SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname <> ALL(%(skip)s)""",
    "views": """
        SELECT n.nspname, c.relname, pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname <> ALL(%(skip)s) AND c.relkind IN ('v', 'm')""",
    "policies": """
        SELECT schemaname, tablename, policyname, permissive, roles::text[], cmd, qual, with_check
        FROM pg_policies WHERE schemaname <> ALL(%(skip)s)""",
    "triggers": """
        SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND n.nspname <> ALL(%(skip)s)""",
    "functions": """
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid),
          pg_get_userbyid(p.proowner), coalesce(p.proacl, acldefault('f'::"char", p.proowner))::text[]
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname <> ALL(%(skip)s) AND p.prokind IN ('f', 'p')""",
    "types": """
        SELECT n.nspname, t.typname, t.typtype,
          (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname <> ALL(%(skip)s) AND t.typtype IN ('e', 'd', 'r')""",
    "publications": """
        SELECT pubname, schemaname, tablename FROM pg_publication_tables""",
    "schemas": """
        SELECT nspname, pg_get_userbyid(nspowner), coalesce(nspacl, acldefault('n'::"char", nspowner))::text[]
        FROM pg_namespace WHERE nspname <> ALL(%(skip)s) AND nspname NOT LIKE 'pg_temp%%'
          AND nspname NOT LIKE 'pg_toast_temp%%'""",
}


TABLE_KINDS = ("relations", "columns", "constraints", "indexes", "views")


def schema_catalog(
    conn: psycopg.Connection, skip: tuple[str, ...] = (), skip_tables_of: tuple[str, ...] = ()
) -> dict[str, list[tuple[Any, ...]]]:
    """Every kind of object of every schema but PostgreSQL's own and `skip`, each kind a sorted list;
    the relations of `skip_tables_of` left out (their functions, triggers and policies kept)."""
    catalog = {}
    with conn.transaction():
        conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
        for kind, query in QUERIES.items():
            rows = conn.execute(query, {"skip": list(SYSTEM + skip)}).fetchall()
            if kind in TABLE_KINDS:
                rows = [row for row in rows if row[0] not in skip_tables_of]
            catalog[kind] = sorted((tuple(_hashable(v) for v in row) for row in rows), key=repr)
    return catalog


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def differences(left: dict[str, list], right: dict[str, list]) -> dict[str, dict[str, list]]:
    """Per kind, the rows only one side has (empty when the schemas are equal)."""
    found = {}
    for kind in left.keys() | right.keys():
        a, b = set(left.get(kind, [])), set(right.get(kind, []))
        if a != b:
            found[kind] = {"only_left": sorted(a - b, key=repr), "only_right": sorted(b - a, key=repr)}
    return found
