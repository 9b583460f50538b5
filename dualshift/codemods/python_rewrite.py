"""The codemods for supabase-py files: `client.table('t')` ⇄ `dual_write(client).table('t')`.

Receivers are rewritten by byte range (what the analyzer recorded), so nothing else in the file moves;
imports are added and removed with LibCST's import visitors, which know Python's import forms.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable

import libcst as cst
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor, RemoveImportsVisitor
from libcst.metadata import ByteSpanPositionProvider, MetadataWrapper, ParentNodeProvider

from dualshift.analyzer.postgrest import PYTHON_COLUMN_FILTERS, map_column_list, map_filter_expression, map_select_list
from dualshift.analyzer.records import CallSite
from dualshift.codemods.edits import Edit, apply_edits
from dualshift.codemods.result import Rewrite, SkippedSite
from dualshift.codemods.unwrap import CallerRetargets, CannotMap, same_edits_for_every_table
from dualshift.codemods.wrap import PYTHON_WRAPPER_NAME, is_wrapped, receiver_edits
from dualshift.plan import NewTable, Plan, Source


def wrapper_module_name(wrapper_path: str) -> str:
    """`worker/db/dual_write.py` → `worker.db.dual_write`."""
    return re.sub(r"\.py$", "", wrapper_path).replace("/", ".")


def _with_import(source: str, module: str, add: bool) -> str:
    tree = cst.parse_module(source)
    context = CodemodContext()
    if add:
        AddImportsVisitor.add_needed_import(context, module, PYTHON_WRAPPER_NAME)
        return AddImportsVisitor(context).transform_module(tree).code
    RemoveImportsVisitor.remove_unused_import(context, module, PYTHON_WRAPPER_NAME)
    code = RemoveImportsVisitor(context).transform_module(tree).code
    if code.startswith(("\n", "\r")) and not source.startswith(("\n", "\r")):
        code = code.lstrip("\r\n")  # the import was the first line: the blank line wrap put after it goes too
    return code


BOM = "\ufeff"


def _after_bom(rewrite) -> Callable[..., Rewrite]:
    """The analyzer's offsets count from after a byte-order mark (as LibCST's): rewrite the text after it
    and put the mark back."""

    @functools.wraps(rewrite)
    def rewrite_body(source: str, *args, **kwargs) -> Rewrite:
        if not source.startswith(BOM):
            return rewrite(source, *args, **kwargs)
        result = rewrite(source[len(BOM) :], *args, **kwargs)
        return Rewrite(BOM + result.new_source, result.rewritten_sites, result.skipped_sites)

    return rewrite_body


@_after_bom
def wrap_python_source(
    source: str, rel_path: str, plan: Plan, *, wrapper_module: str, reads: bool = False, calls: list[CallSite]
) -> Rewrite:
    edits, skipped, count = receiver_edits(calls, plan, reads, PYTHON_WRAPPER_NAME)
    if not edits:
        return Rewrite(source, 0, tuple(skipped))
    rewritten = apply_edits(source.encode("utf-8"), edits).decode("utf-8")
    return Rewrite(_with_import(rewritten, wrapper_module_name(wrapper_module), True), count, tuple(skipped))


# ---------------------------------------------------------------------------------------------
# unwrap


def _string_value(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def _quoted(text: str, like: cst.SimpleString | None) -> str:
    quote = like.quote if like is not None and like.quote in ('"', "'") else '"'
    return quote + text.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


class _Mapper:
    def __init__(self, table: NewTable, source: Source, spans, rows_elsewhere: bool = False) -> None:
        self.table, self.source, self.spans = table, source, spans
        self.rows_elsewhere = rows_elsewhere  # a helper's rows come from its callers
        self.mapping = table.column_mapping(source.table)
        self.edits: list[Edit] = []

    def span(self, node: cst.CSTNode) -> tuple[int, int]:
        span = self.spans[node]
        return span.start, span.start + span.length

    def column(self, name: str) -> str:
        if name in self.mapping:
            return self.mapping[name]
        raise CannotMap(f"column {name} of {self.source.table} has no place in {self.table.name}")

    def string(self, node: cst.BaseExpression, transform) -> None:
        value = _string_value(node)
        if value is None:
            raise CannotMap("a column given as an expression cannot be mapped")
        mapped = transform(value)
        if mapped != value:
            self.edits.append(Edit(*self.span(node), _quoted(mapped, node)))

    def rows(self, node: cst.BaseExpression, constants: bool) -> None:
        if isinstance(node, cst.List | cst.Tuple):
            for element in node.elements:
                self.rows(element.value, constants)
            return
        if not isinstance(node, cst.Dict):
            if constants and self.source.constants:
                raise CannotMap("rows built elsewhere: add the constant columns by hand")
            if self.rows_elsewhere and not self.source.rename:
                return  # the new table names every column of this source as it does: nothing to rename
            raise CannotMap("rows built elsewhere cannot have their columns renamed here")
        present = set()
        for element in node.elements:
            if not isinstance(element, cst.DictElement) or _string_value(element.key) is None:
                raise CannotMap("a row with computed keys cannot be mapped")
            new = self.column(_string_value(element.key))
            present.add(new)
            self.string(element.key, lambda _value, new=new: new)
        if constants:
            missing = [(c, v) for c, v in self.source.constants.items() if c not in present]
            if missing:
                text = ", ".join(
                    f"{_quoted(c, None)}: {json.dumps(v) if not isinstance(v, bool) else str(v)}" for c, v in missing
                )
                if node.elements:
                    end = self.span(node.elements[-1])[1]
                    self.edits.append(Edit(end, end, ", " + text))
                else:
                    start, stop = self.span(node)
                    self.edits.append(Edit(start, stop, "{" + text + "}"))

    def select(self, text: str) -> str:
        return map_select_list(text, self.column)

    def conflict(self, text: str) -> str:
        return map_column_list(text, self.column)

    def expression(self, text: str) -> str:
        return map_filter_expression(text, self.column)


FILTERS = PYTHON_COLUMN_FILTERS | {"order"}


def _chain_calls(call: cst.Call, parents) -> list[tuple[str, cst.Call]]:
    steps = []
    current: cst.CSTNode = call
    while True:
        parent = parents.get(current)
        if not isinstance(parent, cst.Attribute) or parent.value is not current:
            return steps
        grand = parents.get(parent)
        if isinstance(grand, cst.Call) and grand.func is parent:
            steps.append((parent.attr.value, grand))
            current = grand
        elif parent.attr.value == "not_":
            current = parent
        else:
            return steps


def _column_edits(arg: cst.Arg, parents, mapper: _Mapper) -> list[Edit]:
    for method, node in _chain_calls(parents[arg], parents):
        positional = [a.value for a in node.args if a.keyword is None]
        keywords = {a.keyword.value: a.value for a in node.args if a.keyword is not None}
        first = positional[0] if positional else None
        if method in ("insert", "upsert") and first is not None:
            mapper.rows(first, constants=True)
            if "on_conflict" in keywords:
                mapper.string(keywords["on_conflict"], mapper.conflict)
        elif (method == "update" and first is not None) or (method == "match" and first is not None):
            mapper.rows(first, constants=False)
        elif method == "select":
            for value in positional:
                mapper.string(value, mapper.select)
        elif method == "or_" and first is not None:
            mapper.string(first, mapper.expression)
        elif method in FILTERS and first is not None:
            mapper.string(first, mapper.column)
    return mapper.edits


class _Tree:
    """A file read once with the spans and parents the rewrites need, and its table arguments by span."""

    def __init__(self, source: str) -> None:
        wrapper = MetadataWrapper(cst.parse_module(source), unsafe_skip_copy=True)
        self.spans = wrapper.resolve(ByteSpanPositionProvider)
        self.parents = wrapper.resolve(ParentNodeProvider)
        self.anchors = {
            (span.start, span.start + span.length): node
            for node, span in self.spans.items()
            if isinstance(node, cst.Arg) and isinstance(self.parents.get(node), cst.Call)
        }

    def table_arg(self, call: CallSite) -> cst.Arg | None:
        return self.anchors.get((call.table_arg_start, call.table_arg_end))


def helper_site_edits(call: CallSite, plan: Plan, raw: bytes) -> tuple[Edit, ...]:
    """A helper's site whose table its callers pass: its column edits, the same for every table the callers
    pass, and its receiver when wrapped (the callers' arguments are retargeted by `unwrap`)."""
    tree = _Tree(raw.decode("utf-8"))
    arg = tree.table_arg(call)
    if arg is None:
        raise CannotMap("the chain could not be found again")

    def column_edits(table: NewTable, source: Source) -> list[Edit]:
        return _column_edits(arg, tree.parents, _Mapper(table, source, tree.spans, rows_elsewhere=True))

    return same_edits_for_every_table(call, plan, raw, column_edits)


@_after_bom
def unwrap_python_source(
    source: str,
    rel_path: str,
    plan: Plan,
    *,
    calls: list[CallSite],
    wrapper_module: str,
    retargets: CallerRetargets | None = None,
) -> Rewrite:
    """`retargets`: the whole tree's decisions on helpers whose callers pass the table (the same
    `plan_caller_retargets` as TypeScript's); without them every such helper is left as it is."""
    retargets = retargets or CallerRetargets()
    tree = _Tree(source) if any(is_wrapped(c) and c.table_kind != "callers" for c in calls) else None
    raw = source.encode("utf-8")
    edits: list[Edit] = []
    skipped: list[SkippedSite] = []
    own, done = retargets.own_sites(rel_path, calls, plan, skipped)
    for call in own:
        table = plan.new_table_for(call.table or "")
        arg = tree.table_arg(call) if tree is not None else None
        if table is None or arg is None:
            skipped.append(
                SkippedSite(call.line, call.table, "not an old table of the plan: remove dual_write( ) by hand")
            )
            continue
        mapper = _Mapper(table, table.source(call.table), tree.spans)
        try:
            _column_edits(arg, tree.parents, mapper)
        except CannotMap as exc:
            skipped.append(SkippedSite(call.line, call.table, str(exc)))
            continue
        receiver = raw[call.receiver_start : call.receiver_end].decode("utf-8")
        inner = receiver[receiver.index("(") + 1 : receiver.rindex(")")]
        table_node = arg.value
        edits += mapper.edits
        edits.append(Edit(call.receiver_start, call.receiver_end, inner))
        edits.append(
            Edit(
                call.table_arg_start,
                call.table_arg_end,
                _quoted(table.name, table_node if isinstance(table_node, cst.SimpleString) else None),
            )
        )
        done += 1
    edits.extend(retargets.edits.get(rel_path, []))
    done += retargets.arguments[rel_path]
    if not edits:
        return Rewrite(source, 0, tuple(skipped))
    rewritten = apply_edits(raw, edits).decode("utf-8")
    if PYTHON_WRAPPER_NAME in source and not re.search(rf"\b{PYTHON_WRAPPER_NAME}\s*\(", rewritten):
        rewritten = _with_import(rewritten, wrapper_module_name(wrapper_module), False)
    return Rewrite(rewritten, done, tuple(skipped))
