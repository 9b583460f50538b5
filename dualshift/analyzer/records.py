"""The call-site records: the one thing the analyzer produces and everything else reads.

The analyzer knows nothing of JSON layouts, diagrams or patches; reports, codemods and the
executor's plan check all consume these plain values (or their dict form in the map file).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from operator import attrgetter
from typing import Any, Literal

Operation = Literal["select", "insert", "upsert", "update", "delete", "unknown"]
WRITE_OPERATIONS: frozenset[str] = frozenset({"insert", "upsert", "update", "delete"})

# How the table name was found. "dynamic" means it was not: `table` is None and
# `table_expression` holds the source text of the argument.
TableKind = Literal[
    "literal",  # 'content_metadata'
    "template",  # `content_metadata` (template literal without substitutions)
    "constant",  # const TABLE = 'x' in the same file / module-level NAME = 'x' in Python
    "imported",  # a constant imported from another module
    "enum",  # Tables.Content
    "object_member",  # TABLES.USERS.name on an `as const` object
    "callers",  # a parameter that every caller passes a resolvable literal to
    "dynamic",
]


@dataclass(frozen=True)
class Filter:
    method: str  # eq, in, gte, match, or, not, filter, ...
    column: str | None  # None where the filter names no single column (an unparsable `or` string)
    value: str | None = None  # source text of the compared value, when there is one

    def to_dict(self) -> dict[str, str | None]:
        return {"method": self.method, "column": self.column, "value": self.value}


@dataclass(frozen=True)
class CallerArgument:
    """Where a caller passes a helper its table (table_kind "callers"): what unwrap rewrites."""

    file: str
    start_byte: int  # the argument's bytes in that file; -1 where unknown
    end_byte: int
    table: str | None
    literal: bool  # a string literal in the source; False for a constant or an imported name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CallSite:
    """One query-builder chain that reaches a table: `client.from('t')...op(...)`."""

    file: str  # POSIX path relative to the scanned root
    line: int  # 1-based line of the `from` / `table` token
    column: int  # 1-based column of that token
    start_byte: int  # the whole chain (outermost expression of the statement's chain)
    end_byte: int
    receiver_start: int  # the client expression the chain starts from (`this.supabase`)
    receiver_end: int
    table_arg_start: int  # the table-name argument, e.g. `'content_metadata'`
    table_arg_end: int
    table: str | None
    table_kind: TableKind
    table_expression: str  # source text of the table argument
    operation: Operation
    chain: tuple[str, ...]  # method names in order, from `from` to the last call
    client: str  # receiver text
    language: Literal["typescript", "tsx", "javascript", "python"]
    code: str  # the chain's text, trimmed
    function: str | None = None  # enclosing function or method, `Class.method` where known
    schema: str | None = None  # from `.schema('name').from(...)`
    columns: tuple[str, ...] = ()  # selected, written and filtered columns, de-duplicated, in order
    select_columns: tuple[str, ...] = ()
    write_columns: tuple[str, ...] = ()  # keys of inserted / updated / upserted object literals
    filters: tuple[Filter, ...] = ()
    on_conflict: tuple[str, ...] = ()
    embedded: tuple[str, ...] = ()  # tables read through embedded resources in the select string
    resolved_tables: tuple[str, ...] = ()  # for table_kind "callers": every table the callers pass
    resolution: str | None = None  # how the table name was found, in words
    builder_variable: str | None = None  # set when the chain was kept in a variable and extended
    crosses_function: bool = False  # the builder is passed into or returned from a function
    # PostgREST embeds through a foreign-key column (`team:team_id(*)`, `user:invited_by(*)`): the
    # related table is named only by the database's foreign key, so these are hints, not table reads.
    foreign_key_embeds: tuple[str, ...] = ()
    caller_arguments: tuple[CallerArgument, ...] = ()  # for table_kind "callers": every caller's argument

    @property
    def is_write(self) -> bool:
        return self.operation in WRITE_OPERATIONS

    def field_values(self) -> dict[str, Any]:
        """The fields by name, values as they are: tuples, and Filter records in `filters`."""
        return dict(zip(_CALL_FIELDS, _call_values(self), strict=True))

    def to_dict(self) -> dict[str, Any]:
        # By hand rather than dataclasses.asdict: maps of 100k calls are written in seconds.
        data = self.field_values()
        for name in _SEQUENCE_FIELDS:
            value = data[name]
            if isinstance(value, tuple):
                data[name] = list(value)
        data["filters"] = [f.to_dict() for f in self.filters]
        data["caller_arguments"] = [a.to_dict() for a in self.caller_arguments]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallSite:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["filters"] = tuple(Filter(**f) for f in values.get("filters", ()))
        values["caller_arguments"] = tuple(CallerArgument(**a) for a in values.get("caller_arguments", ()))
        for name in _SEQUENCE_FIELDS:
            values[name] = tuple(values.get(name, ()))
        return cls(**values)


_CALL_FIELDS = tuple(f.name for f in fields(CallSite))
_call_values = attrgetter(*_CALL_FIELDS)
# The tuple fields besides `filters` and `caller_arguments`: lists in the dict form.
_SEQUENCE_FIELDS = (
    "chain",
    "columns",
    "select_columns",
    "write_columns",
    "on_conflict",
    "embedded",
    "resolved_tables",
    "foreign_key_embeds",
)


@dataclass(frozen=True)
class SideCall:
    """A call that looks like a table call but is not one: storage buckets and RPC functions."""

    file: str
    line: int
    column: int
    kind: Literal["storage", "rpc"]
    name: str | None  # bucket or function name when literal
    operation: str | None  # storage: upload / download / remove / ...; rpc: None
    client: str
    code: str
    function: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SideCall:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# "syntax": the file does not parse (Python's parser, or tree-sitter and the TypeScript compiler agree);
# "grammar": the TypeScript compiler parses it and tree-sitter does not (a gap in the grammar: the calls
# outside the unreadable part are kept, and the file does not count as failed); "input": the file could
# not be read as source at all (binary, not UTF-8, too large, a broken link, nesting too deep).
FailureKind = Literal["syntax", "grammar", "input"]


@dataclass(frozen=True)
class ParseFailure:
    file: str
    reason: str
    kind: FailureKind = "input"
    note: str | None = None  # e.g. why the TypeScript compiler could not be asked

    @property
    def counts_as_failed(self) -> bool:
        return self.kind != "grammar"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FileResult:
    """Everything the analyzer found in one file."""

    file: str
    calls: list[CallSite] = field(default_factory=list)
    side_calls: list[SideCall] = field(default_factory=list)
    failure: ParseFailure | None = None
