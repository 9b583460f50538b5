"""The unwrap codemod (seed 001, Step 8.4): back to plain client calls on the new tables.

`dualWrite(supabase).from('tweets').insert({ text })` becomes
`supabase.from('posted_content').insert({ content: text, source_table: 'tweets', decision_type: 'single' })`:
the new table's name, column names mapped in object keys, select lists, filters and onConflict, the
source's constant columns added to inserted objects, and the wrapper import removed when unused.
A site that cannot be mapped completely is left as it is, with the reason.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath

from dualshift.analyzer import typescript
from dualshift.analyzer.postgrest import map_column_list, map_filter_column, map_filter_expression, map_select_list
from dualshift.analyzer.records import CallSite
from dualshift.codemods.edits import Edit, apply_edits
from dualshift.codemods.imports import detect_style, module_specifier, remove_import
from dualshift.codemods.result import Rewrite, SkippedSite
from dualshift.codemods.wrap import WRAPPER_NAME, callers_reason, is_wrapped
from dualshift.plan import NewTable, Plan, Source

FILTER_METHODS = typescript.FILTERS_WITH_COLUMN | {"order"}


class CannotMap(ValueError):
    pass


def _quoted(text: str, quote: str) -> str:
    escaped = text.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return f"{quote}{escaped}{quote}"


class _SiteMapper:
    def __init__(self, table: NewTable, source: Source, quote: str) -> None:
        self.table, self.source, self.quote = table, source, quote
        self.mapping = table.column_mapping(source.table)
        self.edits: list[Edit] = []

    def column(self, name: str) -> str:
        if name in self.mapping:
            return self.mapping[name]
        raise CannotMap(f"column {name} of {self.source.table} has no place in {self.table.name}")

    def string_arg(self, node, transform) -> None:
        value = typescript.string_value(node)
        if value is None:
            raise CannotMap(f"a column given as an expression ({node.text.decode()}) cannot be mapped")
        mapped = transform(value)
        if mapped != value:
            quote = node.text.decode()[0] if node.text.decode()[:1] in "'\"`" else self.quote
            self.edits.append(Edit(node.start_byte, node.end_byte, _quoted(mapped, quote)))

    def object_keys(self, node, add_constants: bool) -> None:
        node = typescript.unwrap_expression(node)
        if node.type == "array":
            for element in node.named_children:
                self.object_keys(element, add_constants)
            return
        if node.type != "object":
            if add_constants and self.source.constants:
                raise CannotMap("rows built elsewhere: add the constant columns by hand")
            if node.type != "object":
                raise CannotMap("rows built elsewhere cannot have their columns renamed here")
        present = set()
        for name, key, value in typescript.object_pairs(node):
            new = self.column(name)
            present.add(new)
            if new == name:
                continue
            if value is None:  # shorthand `{ text }` → `text: text` under the new name
                self.edits.append(Edit(key.start_byte, key.end_byte, f"{new}: {name}"))
            else:
                self.edits.append(Edit(key.start_byte, key.end_byte, new))
        if add_constants:
            missing = [(c, v) for c, v in self.source.constants.items() if c not in present]
            if missing:
                text = ", ".join(f"{c}: {self._literal(v)}" for c, v in missing)
                members = [m for m in node.named_children if m.type != "comment"]
                if members:  # right after the last member, before any trailing comma
                    self.edits.append(Edit(members[-1].end_byte, members[-1].end_byte, ", " + text))
                else:
                    self.edits.append(Edit(node.end_byte - 1, node.end_byte - 1, " " + text + " "))

    def _literal(self, value) -> str:
        if isinstance(value, str):
            return _quoted(value, self.quote)
        return json.dumps(value)

    def select_list(self, text: str) -> str:
        return map_select_list(text, self.column)

    def filter_expression(self, text: str) -> str:
        return map_filter_expression(text, self.column)

    def conflict_list(self, text: str) -> str:
        return map_column_list(text, self.column)


def _unwrap_site(call: CallSite, chain, plan: Plan, quote: str, raw: bytes) -> list[Edit]:
    new_table = plan.new_table_for(call.table or "")
    if new_table is None:
        raise CannotMap(f"{call.table} is not an old table of the plan")
    source = new_table.source(call.table)
    mapper = _SiteMapper(new_table, source, quote)
    for method, node in chain.steps:
        args = chain.arguments(node)
        first = args[0] if args else None
        if method in ("insert", "upsert") and first is not None:
            mapper.object_keys(first, add_constants=True)
            if method == "upsert" and len(args) > 1:
                conflict = typescript.object_pairs(args[1])
                for name, _, value in conflict:
                    if name == "onConflict" and value is not None:
                        mapper.string_arg(value, mapper.conflict_list)
        elif method == "update" and first is not None:
            mapper.object_keys(first, add_constants=False)
        elif method == "select" and first is not None:
            mapper.string_arg(first, mapper.select_list)
        elif method == "match" and first is not None:
            mapper.object_keys(first, add_constants=False)
        elif method == "or" and first is not None:
            mapper.string_arg(first, mapper.filter_expression)
        elif method in FILTER_METHODS and first is not None:
            mapper.string_arg(first, lambda text: map_filter_column(text, mapper.column))
    # The receiver `dualWrite(x)` becomes `x`; the table argument the new table's name.
    receiver = raw[call.receiver_start : call.receiver_end].decode("utf-8")
    inner = receiver[receiver.index("(") + 1 : receiver.rindex(")")]
    mapper.edits.append(Edit(call.receiver_start, call.receiver_end, inner))
    mapper.edits.append(Edit(call.table_arg_start, call.table_arg_end, _quoted(new_table.name, quote)))
    return mapper.edits


def unwrap_typescript(
    source: str, rel_path: str, calls: list[CallSite], plan: Plan, wrapper_path: str, specifier: str | None = None
) -> Rewrite:
    raw = source.encode("utf-8")
    suffix = PurePosixPath(rel_path).suffix
    tree = typescript.parse(raw, suffix)
    symbols = typescript.module_symbols(tree, raw, suffix)
    quote = detect_style(source).quote
    edits: list[Edit] = []
    skipped: list[SkippedSite] = []
    done = 0
    seen: set[int] = set()
    for call in calls:
        if not is_wrapped(call) or call.receiver_start in seen:
            continue
        seen.add(call.receiver_start)
        if call.table_kind == "callers":
            skipped.append(SkippedSite(call.line, call.table, callers_reason(call, plan)))
            continue
        if call.table is None or call.table not in plan.table_mapping:
            skipped.append(
                SkippedSite(call.line, call.table, "not an old table of the plan: remove dualWrite( ) by hand")
            )
            continue
        chain = typescript.chain_at(tree, call.table_arg_start, call.table_arg_end, symbols)
        if chain is None:
            skipped.append(SkippedSite(call.line, call.table, "the chain could not be found again"))
            continue
        try:
            edits.extend(_unwrap_site(call, chain, plan, quote, raw))
            done += 1
        except CannotMap as exc:
            skipped.append(SkippedSite(call.line, call.table, str(exc)))
    if not edits:
        return Rewrite(source, 0, tuple(skipped))
    rewritten = apply_edits(raw, edits).decode("utf-8")
    if not re.search(rf"\b{WRAPPER_NAME}\s*\(", rewritten):
        rewritten = remove_import(rewritten, WRAPPER_NAME, specifier or module_specifier(rel_path, wrapper_path))
    return Rewrite(rewritten, done, tuple(skipped))
