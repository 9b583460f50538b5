"""The new-table row of one key when its table merges its sources (some column under `precedence = "coalesce"`).

Each column takes its value from the sources that hold the key and feed it, in precedence order: under
"first" the first of them (NULL included), under "coalesce" the first non-NULL value among them. A
column that no source holding the key feeds gets its default (or NULL), on insert and on update alike:
the row is what a fresh copy of the sources would give (verify does not compare such a column, whose
default may be volatile).

The backfill and the sync triggers build their statement here, so that both write the same row; verify
computes the same rule on its own (verify.py), from the sources, to check them.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from dualshift.executor.catalog import SourceMapping
from dualshift.plan import NewTable, Plan

BASE = "_ds_b"  # the driving rows (a backfill batch of one source), already new-table shaped


def _lateral_alias(mapping: SourceMapping) -> str:
    return f"_ds_s{mapping.precedence}"


@dataclass(frozen=True)
class MergedUpsert:
    """INSERT … SELECT of merged rows, upserting on the key.

    `base` is a FROM item aliased `_ds_b` yielding rows of `base_mapping` (new-table column names), or
    None for a single key given by `key_values`; every mapping in `laterals` is read for the same key.
    On a conflict every column is overwritten: the row is the rule's over the sources holding the key."""

    plan: Plan
    table: NewTable
    base_mapping: SourceMapping | None
    laterals: tuple[SourceMapping, ...]

    def key_values(self, key_values: list[sql.Composable] | None) -> list[sql.Composable]:
        if key_values is not None:
            return key_values
        return [sql.Identifier(BASE, k) for k in self.table.key]

    def columns(self) -> list[str]:
        fed = set(self.base_mapping.new_columns if self.base_mapping else ())
        for mapping in self.laterals:
            fed.update(mapping.new_columns)
        return [c for c in self.table.column_names if c in fed]

    def feeders(self, column: str) -> list[tuple[SourceMapping, str]]:
        """(mapping, alias) of the sources feeding a column, in precedence order."""
        found = []
        if self.base_mapping and column in self.base_mapping.new_columns:
            found.append((self.base_mapping, BASE))
        found += [(m, _lateral_alias(m)) for m in self.laterals if column in m.new_columns]
        return sorted(found, key=lambda pair: pair[0].precedence)

    def _held(self, alias: str) -> sql.Composable:
        if alias == BASE:
            return sql.SQL("true")
        return sql.SQL("{} IS NOT NULL").format(sql.Identifier(alias, "_ds_held"))

    def _fallback(self, column: str) -> sql.Composable:
        spec = self.table.column(column)
        value = sql.SQL(spec.default) if spec.default is not None else sql.SQL("NULL")
        return sql.SQL("CAST(({}) AS {})").format(value, sql.SQL(spec.type))

    def value(self, column: str, key_values: list[sql.Composable] | None) -> sql.Composable:
        if column in self.table.key:
            return self.key_values(key_values)[self.table.key.index(column)]
        feeders = self.feeders(column)
        values = [sql.Identifier(alias, column) for _, alias in feeders]
        if self.table.column_precedence(column) == "coalesce":
            merged = sql.SQL("COALESCE({})").format(sql.SQL(", ").join(values))
            if feeders[0][1] == BASE:
                return merged
            any_held = sql.SQL(" OR ").join(self._held(alias) for _, alias in feeders)
            return sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(any_held, merged, self._fallback(column))
        if feeders[0][1] == BASE:
            return values[0]
        branches = [
            sql.SQL("WHEN {} THEN {}").format(self._held(alias), value)
            for (_, alias), value in zip(feeders, values, strict=True)
        ]
        return sql.SQL("CASE {} ELSE {} END").format(sql.SQL(" ").join(branches), self._fallback(column))

    def lateral(self, mapping: SourceMapping, key_values: list[sql.Composable]) -> sql.Composable:
        # The same row a copy of that source keeps for the key: the first in its key order.
        return sql.SQL(
            " LEFT JOIN LATERAL (SELECT true AS _ds_held, {select} FROM {old} o WHERE {match}"
            " ORDER BY {old_keys}, o.ctid LIMIT 1) {alias} ON true"
        ).format(
            select=mapping.select_list(),
            old=sql.Identifier(mapping.source.schema, mapping.source.table),
            match=mapping.key_match(key_values),
            old_keys=mapping.key_columns(),
            alias=sql.Identifier(_lateral_alias(mapping)),
        )

    def statement(
        self,
        base: sql.Composable | None,
        key_values: list[sql.Composable] | None,
        where: sql.Composable,
        upsert: bool = True,
    ) -> sql.Composable:
        keys = self.key_values(key_values)
        columns = self.columns()
        source = base if base is not None else sql.SQL("(SELECT) {}").format(sql.Identifier(BASE))
        joins = sql.SQL("").join(self.lateral(m, keys) for m in self.laterals)
        on_conflict = sql.SQL("")
        if upsert:
            on_conflict = sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
                sql.SQL(", ").join(map(sql.Identifier, self.table.key)), self.assignments(columns)
            )
        return sql.SQL(
            "INSERT INTO {new} AS n ({columns}) SELECT {values} FROM {source}{joins} WHERE {where}{oc}"
        ).format(
            new=sql.Identifier(self.plan.new_schema, self.table.name),
            columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
            values=sql.SQL(", ").join(self.value(c, key_values) for c in columns),
            source=source,
            joins=joins,
            where=where,
            oc=on_conflict,
        )

    def assignments(self, columns: list[str]) -> sql.Composable:
        updates = [c for c in columns if c not in self.table.key] or [self.table.key[0]]
        return sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates)
