"""The migration plan (`dualshift.toml`): the one contract shared by codemods, wrapper and executor.

A plan declares each new table (its columns, key, indexes and checks) and the old tables it
replaces, in precedence order: when two sources hold the same key, the earlier one wins (or, under
`precedence = "coalesce"` for the table or a column, each column takes the first non-NULL value).
Each source says how its rows map onto the new table: the key columns, renames (old → new)
and constant values for new columns. Columns not renamed keep their name when the new table
has a column of that name; any other old column is dropped (and must be listed in `drop`
so that `plan check` knows it was meant).

Everything is validated before anything reads it: identifiers, SQL types and snippets,
references between sections. Errors carry the plan's path and the TOML line.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
PLAN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
SOURCES_ARE = ("twins", "partitions")
# How a column's value is chosen when several sources hold a key: "first" takes the value of the first
# source (in precedence order) that holds the key and feeds the column, NULL included; "coalesce"
# takes the first non-NULL value among them.
PRECEDENCES = ("first", "coalesce")
VIEW_WRITES = ("allow", "refuse")
# What to do with an object that depends on an old table (`[dependents]`, see executor/inventory.py):
# recreate it over the compatibility view, re-point it to the new table, carry it over to the new
# table, keep it on the archived table, or drop it.
DEPENDENT_DECISIONS = ("recreate", "repoint", "carry", "archive", "drop")
# A column type as SQL spells it: a name of one or more words (double precision), optionally
# schema-qualified, where a quoted name keeps its case ("reportTypes", public."reportTypes");
# then a type modifier (numeric(5,4)), trailing words (timestamp(3) with time zone) and array
# brackets. Quotes must balance, so nothing outside a quoted name can be anything but a type.
_TYPE_NAME = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"\x00-\x1f]|""){1,63}")'
# The words of multi-word type names (character varying, timestamp with time zone, interval day to second):
# a column constraint (NOT NULL, PRIMARY KEY, COLLATE …) is not part of a type.
_TYPE_WORD = r"(?i:precision|varying|with|without|time|zone|year|month|day|hour|minute|second|to)\b"
SQL_TYPE = re.compile(
    rf"^(?:{_TYPE_NAME}\s*\.\s*)?{_TYPE_NAME}(?:\s+{_TYPE_WORD})*"
    r"(?:\s*\(\s*\d+\s*(?:,\s*\d+\s*)?\))?"
    rf"(?:\s+{_TYPE_WORD})*"
    r"(?:\s*\[\d*\])*$"
)
# SQL snippets (defaults, checks, index predicates) are the plan author's, but a statement
# separator or a comment in them can never be meant: reject them so a snippet stays one expression.
FORBIDDEN_IN_SNIPPET = re.compile(r";|--|/\*|\*/")

ScalarValue = str | int | float | bool | None


class PlanError(ValueError):
    """A plan that cannot be used; the message names the file and, where known, the line."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.detail = message
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    default: str | None = None  # an SQL expression
    unique: bool = False
    references: str | None = None  # "table(column)" among the plan's new tables
    precedence: str | None = None  # "first" or "coalesce": overrides the table's `precedence`


@dataclass(frozen=True)
class Index:
    columns: tuple[str, ...]
    where: str | None = None  # an SQL predicate for a partial index
    descending: bool = False


@dataclass(frozen=True)
class Source:
    """An old table that feeds a new one."""

    table: str
    schema: str = "public"
    key: tuple[str, ...] = ()  # old columns, in the order of the new table's key
    rename: Mapping[str, str] = field(default_factory=dict)  # old column → new column
    constants: Mapping[str, ScalarValue] = field(default_factory=dict)  # new column → value
    drop: tuple[str, ...] = ()  # old columns deliberately not carried over
    timestamp: str | None = None  # old column used for freshness checks (e.g. created_at)
    partition: str | None = None  # SQL predicate over new-table columns: this source's rows
    view_writes: str = "allow"  # "allow" or "refuse": writes through the compatibility view

    def new_column(self, old_column: str, new_columns: Iterable[str]) -> str | None:
        """The new column an old column lands in, or None when it is dropped."""
        if old_column in self.drop:
            return None
        target = self.rename.get(old_column, old_column)
        return target if target in set(new_columns) else None

    def old_column(self, new_column: str) -> str | None:
        """The old column that feeds a new column (the inverse of `new_column`)."""
        for old, new in self.rename.items():
            if new == new_column:
                return old
        if new_column in self.rename or new_column in self.drop:
            return None
        return new_column


@dataclass(frozen=True)
class NewTable:
    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    sources: tuple[Source, ...]  # precedence order: the first source wins a key conflict
    indexes: tuple[Index, ...] = ()
    checks: tuple[str, ...] = ()
    # "twins": every source holds the same entity, each old name shows every row;
    # "partitions": each source owns the rows of its partition (its constants or `partition`).
    sources_are: str = "twins"
    precedence: str = "first"  # the default of its columns' `precedence` (PRECEDENCES)

    def column_precedence(self, column: str) -> str:
        """The rule ("first" or "coalesce") that chooses this column's value when several sources hold a key.

        The one rule the backfill, the sync triggers, verify, preflight and the compatibility views
        apply. A key column is always "first" (every source holding the key has the same value)."""
        if column in self.key:
            return "first"
        found = self.column(column)
        return (found.precedence if found and found.precedence else None) or self.precedence

    @property
    def merges_sources(self) -> bool:
        """Some column takes a value from another source than the first one holding the key."""
        return any(self.column_precedence(c) == "coalesce" for c in self.column_names)

    def partition_predicate(self, old_table: str) -> str | None:
        """SQL over the new table's columns selecting the rows of one source; None for twins.

        A source's predicate is its `partition`, else its constants; a source with neither owns
        the rows no other source's predicate selects (at most one such source, checked on load).
        """
        if self.sources_are != "partitions":
            return None
        own = _source_predicate(self.source(old_table), self.discriminators)
        if own is not None:
            return own
        others = [p for s in self.sources if s.table != old_table and (p := _source_predicate(s, self.discriminators))]
        return " AND ".join(f"NOT coalesce(({p}), false)" for p in others) or "true"

    @property
    def discriminators(self) -> tuple[str, ...]:
        """Constant columns that tell sources apart (set by two or more sources, to different values)."""
        return _discriminators(self.sources)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def source(self, old_table: str) -> Source | None:
        return next((s for s in self.sources if s.table == old_table), None)

    def column_mapping(self, old_table: str) -> dict[str, str]:
        """old column → new column for every new column fed by this source (constants excluded)."""
        source = self.source(old_table)
        if source is None:
            raise KeyError(old_table)
        mapping: dict[str, str] = {}
        for column in self.column_names:
            if column in source.constants:
                continue
            old = source.old_column(column)
            if old is not None:
                mapping[old] = column
        return mapping


def sql_literal(value: ScalarValue) -> str:
    """A constant as SQL text (plan.py builds no composed SQL; this serves predicates only)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _discriminators(sources: tuple[Source, ...]) -> tuple[str, ...]:
    found = []
    for column in sorted(set().union(*(s.constants for s in sources))):
        values = [repr(s.constants[column]) for s in sources if column in s.constants]
        if len(values) > 1 and len(set(values)) == len(values):
            found.append(column)
    return tuple(found)


def _source_predicate(source: Source | None, discriminators: tuple[str, ...]) -> str | None:
    if source is None:
        return None
    if source.partition:
        return source.partition
    own = [c for c in discriminators if c in source.constants]
    if own:
        return " AND ".join(f'"{c}" = {sql_literal(source.constants[c])}' for c in own)
    return None


@dataclass(frozen=True)
class Thresholds:
    max_missing_rows: int = 0  # keys in a source that are absent from the new table
    max_extra_rows: int = 0  # keys in the new table that no source has
    max_mismatched_rows: int = 0  # rows whose mapped columns differ
    freshness_hours: int = 24  # the window of the freshness check


WATCH_ACTIONS = ("switch-reads-0", "dual-write-off", "alert")


@dataclass(frozen=True)
class Watch:
    """`[watch]`: when `migrate watch` calls the migration unhealthy, and what it then does (seed 000 §4)."""

    drift_minutes: int = 15  # how far back each source's recent rows are compared with the new table
    max_drift_rows: int = 0  # recent source rows missing from the new table
    max_failed_writes: int = 0  # failed mirror writes recorded in dualshift.failed_writes per interval
    max_probe_ms: int = 2000  # a probe query on an old or new table slower than this is a breach
    max_lock_waits: int = 5  # sessions waiting on a lock on the migration's tables
    max_shadow_mismatches_per_minute: float = 0  # rows the wrapper's shadow reads found different, per minute
    action: str = "switch-reads-0"  # or "dual-write-off", or "alert" (report only)


@dataclass(frozen=True)
class Plan:
    path: str
    tables: tuple[NewTable, ...]
    name: str = "unnamed"  # the migration's id: the executor keys its state by it
    timezone: str = "UTC"  # how `timestamp` (without time zone) values are read when cast to timestamptz
    new_schema: str = "public"  # where `create` builds the new tables
    target_schema: str = "public"  # where `cleanup` promotes them
    archive_schema: str = "dualshift_archive"  # where `cleanup` moves the old tables
    thresholds: Thresholds = Thresholds()
    watch: Watch = Watch()
    # `[dependents]`: ("<kind> <name>" of an object that depends on an old table, one of DEPENDENT_DECISIONS)
    dependents: tuple[tuple[str, str], ...] = ()

    def table(self, name: str) -> NewTable | None:
        return next((t for t in self.tables if t.name == name), None)

    def new_table_for(self, old_table: str) -> NewTable | None:
        return next((t for t in self.tables if t.source(old_table) is not None), None)

    @property
    def old_tables(self) -> tuple[str, ...]:
        return tuple(s.table for t in self.tables for s in t.sources)

    @property
    def table_mapping(self) -> dict[str, str]:
        """old table → new table, for every source in the plan."""
        return {s.table: t.name for t in self.tables for s in t.sources}


def _default_sources_are(sources: tuple[Source, ...]) -> str:
    """Partitions when every source declares a partition, or one constant column tells all but one apart."""
    if len(sources) > 1 and all(s.partition for s in sources):
        return "partitions"
    for column in _discriminators(sources):
        if sum(column in s.constants for s in sources) >= len(sources) - 1:
            return "partitions"
    return "twins"


def load_plan(path: Path | str) -> Plan:
    """Read and validate a plan file; raise PlanError naming the file and line on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(path, f"cannot read plan: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PlanError(path, "plan is not UTF-8 text") from exc
    return parse_plan(text, path)


def parse_plan(text: str, path: Path | str = "<plan>") -> Plan:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's TOMLDecodeError carries the position only in its message.
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise PlanError(path, f"invalid TOML: {message}", int(found.group(1)) if found else None) from exc
    return _PlanReader(text, path).read(raw)


def line_of(lines: list[str], *needles: str) -> int | None:
    """The first line holding every needle, searched from the line holding the first one (1-based)."""
    if not needles:
        return None
    for number, line in enumerate(lines, start=1):
        if needles[0] in line:
            for offset, later in enumerate(lines[number - 1 :]):
                if all(n in later for n in needles[1:]):
                    return number + offset
            return number
    return None


def plan_lines(plan: Plan) -> list[str]:
    """The plan file's lines, to locate a finding; empty when the file cannot be read any more."""
    try:
        return Path(plan.path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []


class _PlanReader:
    """Turns the TOML document into a Plan, locating each error on its TOML line."""

    def __init__(self, text: str, path: Path | str) -> None:
        self.lines = text.splitlines()
        self.path = path

    def fail(self, message: str, *needles: str) -> PlanError:
        return PlanError(self.path, message, self.line_of(*needles))

    def line_of(self, *needles: str) -> int | None:
        return line_of(self.lines, *needles)

    def read(self, raw: dict[str, Any]) -> Plan:
        version = raw.get("version", 1)
        if version != 1:
            raise self.fail(f"unsupported plan version {version!r} (this dualshift reads version 1)", "version")
        name = raw.get("name")
        if not isinstance(name, str) or not PLAN_NAME.match(name):
            raise self.fail(
                'the plan needs `name = "..."` at the top: the migration\'s id (letters, digits, . _ -, '
                "at most 63 characters), which keys its state in the database",
                "name =" if "name" in raw else "version",
            )
        session = self.table_value(raw, "session")
        timezone = session.get("timezone", "UTC")
        if not isinstance(timezone, str) or not re.match(r"^[A-Za-z0-9_+\-/:]{1,64}$", timezone):
            raise self.fail('session.timezone must be a time zone name such as "UTC"', "timezone")
        schemas = self.table_value(raw, "schemas")
        new_schema = self.identifier(schemas.get("new", "public"), "schema", "new")
        target_schema = self.identifier(schemas.get("target", "public"), "schema", "target")
        archive_schema = self.identifier(schemas.get("archive", "dualshift_archive"), "schema", "archive")
        if archive_schema in (new_schema, target_schema):
            raise self.fail("the archive schema must differ from the new and target schemas", "archive")
        raw_tables = raw.get("tables")
        if not isinstance(raw_tables, list) or not raw_tables:
            raise self.fail("the plan declares no tables: add at least one [[tables]] section", "[[tables]]")
        tables = tuple(self.new_table(t) for t in raw_tables)
        plan = Plan(
            path=str(self.path),
            tables=tables,
            name=name,
            timezone=timezone,
            new_schema=new_schema,
            target_schema=target_schema,
            archive_schema=archive_schema,
            thresholds=self.thresholds(self.table_value(raw, "verify")),
            watch=self.watch(self.table_value(raw, "watch")),
            dependents=self.dependents(self.table_value(raw, "dependents")),
        )
        self.check_cross_references(plan)
        return plan

    def table_value(self, raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(f"`{key}` must be a table", key)
        return value

    def identifier(self, value: Any, what: str, *context: str) -> str:
        if not isinstance(value, str) or not IDENTIFIER.match(value):
            # Point at the offending value as TOML spells it (quotes escaped), else at the context.
            spelled = json.dumps(value)[1:-1] if isinstance(value, str) else str(value)
            located = self.line_of(spelled) if spelled else None
            raise PlanError(
                self.path,
                f"{what} name {value!r} is not a plain SQL identifier "
                "(letters, digits and _, not starting with a digit, at most 63 characters)",
                located or self.line_of(*context),
            )
        return value

    def identifiers(self, values: Any, what: str, *context: str) -> tuple[str, ...]:
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list):
            raise self.fail(f"{what} must be a list of names", *context)
        return tuple(self.identifier(v, what, str(v)) for v in values)

    def snippet(self, value: Any, what: str, *context: str) -> str:
        if not isinstance(value, str) or not value.strip() or FORBIDDEN_IN_SNIPPET.search(value):
            raise self.fail(f"{what} {value!r} must be one SQL expression without ; or comments", *context)
        return value.strip()

    def new_table(self, raw: Mapping[str, Any]) -> NewTable:
        name = self.identifier(raw.get("name"), "table", f'name = "{raw.get("name")}"')
        where = f'name = "{name}"'
        columns = tuple(self.column(c, name) for c in raw.get("columns", []))
        if not columns:
            raise self.fail(f"table {name} declares no columns", where)
        names = [c.name for c in columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise self.fail(f"table {name} declares column {duplicates[0]} twice", where)
        key = self.identifiers(raw.get("key", []), "key column", where)
        if not key:
            raise self.fail(f'table {name} has no key: set key = ["..."] to the columns that identify a row', where)
        for column in key:
            if column not in names:
                raise self.fail(f"key column {column} of table {name} is not one of its columns", where, "key")
        for column in columns:
            if column.name in key and column.precedence == "coalesce":
                raise self.fail(
                    f'key column {name}.{column.name} cannot take precedence = "coalesce": every source holding'
                    " a key has the same key",
                    where,
                    f'name = "{column.name}"',
                    "precedence",
                )
        sources = tuple(self.source(s, name, names, len(key)) for s in raw.get("sources", []))
        if not sources:
            raise self.fail(f"table {name} replaces no old table: add a [[tables.sources]] section", where)
        indexes = tuple(self.index(i, name, names) for i in raw.get("indexes", []))
        checks = tuple(self.snippet(c, "check", where) for c in raw.get("checks", []))
        sources_are = raw.get("sources_are", _default_sources_are(sources))
        if sources_are not in SOURCES_ARE:
            raise self.fail(f"sources_are of {name} must be one of {', '.join(SOURCES_ARE)}", "sources_are")
        if sources_are == "partitions":
            unowned = [s.table for s in sources if _source_predicate(s, _discriminators(sources)) is None]
            if len(unowned) > 1:
                raise self.fail(
                    f"table {name} has partitioned sources but {', '.join(unowned)} have neither constants nor"
                    " `partition`: at most one source may own the rest",
                    "sources_are" if "sources_are" in raw else where,
                )
        return NewTable(
            name=name,
            key=key,
            columns=columns,
            sources=sources,
            indexes=indexes,
            checks=checks,
            sources_are=sources_are,
            precedence=self.precedence(raw.get("precedence", "first"), f"table {name}", where, "precedence ="),
        )

    def precedence(self, value: Any, owner: str, *needles: str) -> str:
        if value not in PRECEDENCES:
            raise self.fail(
                f'precedence of {owner} is {value!r}; it must be "first" (the first source holding a key gives'
                ' every column) or "coalesce" (each column takes the first non-NULL value in source order)',
                *needles,
            )
        return value

    def column(self, raw: Any, table: str) -> Column:
        if not isinstance(raw, Mapping):
            raise self.fail(f"a column of table {table} must be a table with name and type", table)
        name = self.identifier(raw.get("name"), "column", f'"{raw.get("name")}"')
        column_type = raw.get("type")
        if not isinstance(column_type, str) or not SQL_TYPE.match(column_type.strip()):
            raise self.fail(f"column {table}.{name} has an invalid SQL type {column_type!r}", f'"{name}"', "type")
        default = raw.get("default")
        if default is not None:
            default = self.snippet(default, f"default of {table}.{name}", f'"{name}"')
        references = raw.get("references")
        if references is not None and not re.match(r"^[A-Za-z_]\w*\([A-Za-z_]\w*\)$", str(references)):
            raise self.fail(f"references of {table}.{name} must look like table(column)", f'"{name}"')
        precedence = raw.get("precedence")
        if precedence is not None:
            precedence = self.precedence(
                precedence, f"column {table}.{name}", f'name = "{table}"', f'name = "{name}"', "precedence"
            )
        return Column(
            name=name,
            type=column_type.strip(),
            nullable=bool(raw.get("nullable", True)),
            default=default,
            unique=bool(raw.get("unique", False)),
            references=references,
            precedence=precedence,
        )

    def source(self, raw: Mapping[str, Any], table: str, new_columns: list[str], key_size: int) -> Source:
        old = self.identifier(raw.get("table"), "source table", f'table = "{raw.get("table")}"')
        where = f'table = "{old}"'
        schema = self.identifier(raw.get("schema", "public"), "schema", where)
        key = self.identifiers(raw.get("key", []), "source key column", where)
        if len(key) != key_size:
            raise self.fail(
                f"source {old} of {table} has a key of {len(key)} column(s); the new table's key has {key_size}",
                where,
                "key =",
            )
        rename = raw.get("rename", {})
        if not isinstance(rename, Mapping):
            raise self.fail(f'rename of source {old} must be a table old = "new"', where)
        for old_column, new_column in rename.items():
            self.identifier(old_column, "column", old_column)
            self.identifier(new_column, "column", str(new_column))
            if new_column not in new_columns:
                raise self.fail(
                    f"source {old} renames {old_column} to {new_column}, which {table} does not have",
                    f'{old_column} = "{new_column}"',
                )
        targets = list(rename.values())
        for old_column, new_column in rename.items():
            if targets.count(new_column) > 1:
                raise self.fail(
                    f"source {old} renames two columns to {new_column}: one of them would migrate nowhere",
                    f'{old_column} = "{new_column}"',
                )
        constants = raw.get("constants", {})
        if not isinstance(constants, Mapping):
            raise self.fail(f"constants of source {old} must be a table column = value", where)
        for column, value in constants.items():
            if column not in new_columns:
                raise self.fail(f"source {old} sets constant {column}, which {table} does not have", column)
            if not isinstance(value, str | int | float | bool):
                raise self.fail(f"constant {column} of source {old} must be a string, number or boolean", column)
        timestamp = raw.get("timestamp")
        if timestamp is not None:
            timestamp = self.identifier(timestamp, "timestamp column", where)
        partition = raw.get("partition")
        if partition is not None:
            partition = self.snippet(partition, f"partition of source {old}", "partition")
        view_writes = raw.get("view_writes", "allow")
        if view_writes not in VIEW_WRITES:
            raise self.fail(f"view_writes of source {old} must be one of {', '.join(VIEW_WRITES)}", "view_writes")
        return Source(
            table=old,
            schema=schema,
            key=key,
            rename=dict(rename),
            constants=dict(constants),
            drop=self.identifiers(raw.get("drop", []), "dropped column", where),
            timestamp=timestamp,
            partition=partition,
            view_writes=view_writes,
        )

    def index(self, raw: Any, table: str, new_columns: list[str]) -> Index:
        if isinstance(raw, list):
            raw = {"columns": raw}
        if not isinstance(raw, Mapping):
            raise self.fail(f"an index of {table} must be a list of columns or a table", table, "indexes")
        columns = self.identifiers(raw.get("columns", []), "index column", table)
        for column in columns:
            if column not in new_columns:
                raise self.fail(f"index of {table} names {column}, which {table} does not have", column)
        where = raw.get("where")
        return Index(
            columns=columns,
            where=None if where is None else self.snippet(where, f"index predicate of {table}", str(where)),
            descending=bool(raw.get("descending", False)),
        )

    def dependents(self, raw: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        for name, decision in raw.items():
            if decision not in DEPENDENT_DECISIONS:
                # The entry's line, its key quoted either way TOML allows; else the section's line.
                line = self.line_of(json.dumps(name)) or self.line_of(f"'{name}'") or self.line_of("[dependents]")
                raise PlanError(
                    self.path,
                    f"[dependents] {name!r}: the decision must be one of {', '.join(DEPENDENT_DECISIONS)}, not"
                    f" {decision!r}",
                    line,
                )
        return tuple(raw.items())

    def watch(self, raw: Mapping[str, Any]) -> Watch:
        values: dict[str, Any] = {}
        for name in ("drift_minutes", "max_drift_rows", "max_failed_writes", "max_probe_ms", "max_lock_waits"):
            if name in raw:
                value = raw[name]
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise self.fail(f"watch.{name} must be a whole number >= 0", name)
                values[name] = value
        rate = raw.get("max_shadow_mismatches_per_minute", 0)
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate < float("inf"):
            raise self.fail(
                "watch.max_shadow_mismatches_per_minute must be a number >= 0", "max_shadow_mismatches_per_minute"
            )
        values["max_shadow_mismatches_per_minute"] = float(rate)
        if "action" in raw:
            if raw["action"] not in WATCH_ACTIONS:
                raise self.fail(f"watch.action must be one of {', '.join(WATCH_ACTIONS)}", "action")
            values["action"] = raw["action"]
        return Watch(**values)

    def thresholds(self, raw: Mapping[str, Any]) -> Thresholds:
        values: dict[str, int] = {}
        for name in ("max_missing_rows", "max_extra_rows", "max_mismatched_rows", "freshness_hours"):
            if name in raw:
                value = raw[name]
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise self.fail(f"verify.{name} must be a whole number >= 0", name)
                values[name] = value
        return Thresholds(**values)

    def check_cross_references(self, plan: Plan) -> None:
        new_names = {t.name for t in plan.tables}
        if len(new_names) != len(plan.tables):
            raise self.fail("two [[tables]] sections declare the same new table", "[[tables]]")
        seen: dict[str, str] = {}
        for table in plan.tables:
            for source in table.sources:
                if source.table in seen:
                    raise self.fail(
                        f"old table {source.table} feeds both {seen[source.table]} and {table.name}",
                        f'table = "{source.table}"',
                    )
                if source.table in new_names:
                    raise self.fail(
                        f"old table {source.table} has the name of a new table", f'table = "{source.table}"'
                    )
                seen[source.table] = table.name
            for column in table.columns:
                if column.references:
                    ref_table = column.references.split("(")[0]
                    if ref_table not in new_names:
                        raise self.fail(
                            f"{table.name}.{column.name} references {ref_table}, which is not a new table of the plan",
                            column.references,
                        )
