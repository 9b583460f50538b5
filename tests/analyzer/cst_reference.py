"""The LibCST reading of supabase-py calls that dualshift shipped before the `ast` path: kept as the
oracle the equivalence tests compare `dualshift.analyzer.python` with (the codemods rewrite with LibCST).

Not used by the scan. `python.py` reads the same facts with the standard library's `ast` (about 20
times faster); this module is the reading it replaced, kept unchanged because the Python codemods
rewrite with LibCST (`codemods/python_rewrite.py`) at the byte spans these records carry, and
`tests/analyzer/test_python.py` asserts that both readings give identical facts (records, byte and
character positions, symbols, imports, call arguments) on the fixtures, tricky code and generated
modules. A change to what the scanner records is made here and there alike. Only the last, pure data
step, making the record from what was read (`python.chain_record`), is shared: the reading itself
(strings, dict keys, positions, byte spans, chains, scopes) stays LibCST's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property

import libcst as cst
from libcst.metadata import (
    ByteSpanPositionProvider,
    CodeRange,
    CodeSpan,
    MetadataWrapper,
    ParentNodeProvider,
    PositionProvider,
)

from dualshift.analyzer.postgrest import COLUMN_FILTERS, from_python
from dualshift.analyzer.python import ChainRead, chain_record
from dualshift.analyzer.records import CallSite, FileResult, Filter, ParseFailure, SideCall
from dualshift.analyzer.resolve import resolve
from dualshift.analyzer.select_string import columns_in_filter_expression, filter_column, parse_select
from dualshift.analyzer.typescript import CallArgument, ModuleFacts, Reference, lookup

ANCHORS = frozenset({"table", "from_"})
WRITES = ("insert", "upsert", "update", "delete")


def analyze_python(rel_path: str, source: bytes) -> FileResult:
    """One Python file on its own (names imported from other files stay unresolved)."""
    facts = analyze_module(rel_path, source)
    failure = ParseFailure(rel_path, facts.syntax_error) if facts.syntax_error else None
    return FileResult(rel_path, resolve({rel_path: facts}), list(facts.side_calls), failure)


class _PythonFacts(ModuleFacts):
    syntax_error: str | None = None


def analyze_module(rel_path: str, source: bytes) -> _PythonFacts:
    facts = _PythonFacts()
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        facts.syntax_error = f"syntax error at line {exc.raw_line}: {exc.message}"
        return facts
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    visitor = _Visitor(rel_path, source, wrapper, facts)
    wrapper.module.visit(visitor)
    visitor.finish()
    return facts


# ---------------------------------------------------------------------------------------------


def _string(node: cst.BaseExpression | None) -> str | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    if isinstance(node, cst.ConcatenatedString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    if isinstance(node, cst.FormattedString) and all(isinstance(p, cst.FormattedStringText) for p in node.parts):
        return "".join(p.value for p in node.parts)  # an f-string without substitutions
    return None


def _path(node: cst.BaseExpression) -> tuple[str, ...] | None:
    if isinstance(node, cst.Name):
        return (node.value,)
    if isinstance(node, cst.Attribute):
        head = _path(node.value)
        return None if head is None else (*head, node.attr.value)
    if isinstance(node, cst.Subscript) and len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
        head = _path(node.value)
        key = _string(node.slice[0].slice.value)
        return None if head is None or key is None else (*head, key)
    return None


def _dict_keys(node: cst.BaseExpression | None) -> list[str]:
    if isinstance(node, cst.List | cst.Tuple):
        keys: list[str] = []
        for element in node.elements:
            keys.extend(k for k in _dict_keys(element.value) if k not in keys)
        return keys
    if isinstance(node, cst.Dict):
        return [k for e in node.elements if isinstance(e, cst.DictElement) and (k := _string(e.key)) is not None]
    if isinstance(node, cst.Call) and _path(node.func) == ("dict",):
        return [a.keyword.value for a in node.args if a.keyword is not None]
    return []


class _Visitor(cst.CSTVisitor):
    def __init__(self, rel: str, source: bytes, wrapper: MetadataWrapper, facts: _PythonFacts) -> None:
        self.rel, self.source, self.facts = rel, source, facts
        self.wrapper = wrapper
        self.language = "python"
        self.anchors: list[cst.Call] = []
        self.functions: list[cst.FunctionDef] = []
        self.classes: list[str] = []
        self.scopes: dict[cst.Call, tuple[str | None, cst.FunctionDef | None, list[str]]] = {}

    # Metadata is resolved on first use, once: only files with a table call need it, and resolving it
    # costs several times the parse (most files of a service hold constants, imports and helper calls).
    @cached_property
    def parents(self) -> Mapping[cst.CSTNode, cst.CSTNode]:
        return self.wrapper.resolve(ParentNodeProvider)

    @cached_property
    def positions(self) -> Mapping[cst.CSTNode, CodeRange]:
        return self.wrapper.resolve(PositionProvider)

    @cached_property
    def spans(self) -> Mapping[cst.CSTNode, CodeSpan]:
        return self.wrapper.resolve(ByteSpanPositionProvider)

    # -- collection -------------------------------------------------------------------------

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.append(node.name.value)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.classes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.functions.append(node)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.functions.pop()

    def visit_Assign(self, node: cst.Assign) -> None:
        if self.functions or len(node.targets) != 1 or not isinstance(node.targets[0].target, cst.Name):
            return
        value = _string(node.value) if _string(node.value) is not None else self._literal(node.value)
        if value is not None:
            self.facts.symbols[node.targets[0].target.value] = value

    def _literal(self, node: cst.BaseExpression) -> object | None:
        text = _string(node)
        if text is not None:
            return text
        if isinstance(node, cst.Dict):
            members = {}
            for element in node.elements:
                if isinstance(element, cst.DictElement) and (key := _string(element.key)) is not None:
                    inner = self._literal(element.value)
                    if inner is not None:
                        members[key] = inner
            return members
        return None

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if isinstance(node.names, cst.ImportStar) or self.functions:
            return
        dots = len(node.relative)
        module = cst.Module([]).code_for_node(node.module) if node.module is not None else ""
        if dots:
            specifier = ("./" if dots == 1 else "../" * (dots - 1)) + module.replace(".", "/")
        else:
            specifier = module.replace(".", "/")
        specifier = specifier.rstrip("/")
        for alias in node.names:
            name = cst.Module([]).code_for_node(alias.name)
            local = alias.asname.name.value if alias.asname and isinstance(alias.asname.name, cst.Name) else name
            self.facts.imports[local] = (specifier, name)
            self.facts.imports[f"{specifier}/{name}"] = (f"{specifier}/{name}", "*")

    def visit_Import(self, node: cst.Import) -> None:
        if self.functions:
            return
        for alias in node.names:
            name = cst.Module([]).code_for_node(alias.name)
            local = alias.asname.name.value if alias.asname and isinstance(alias.asname.name, cst.Name) else name
            self.facts.imports[local] = (name.replace(".", "/"), "*")

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value in ANCHORS | {"rpc"}:
            self.anchors.append(node)
            qualified = self._qualified_function()
            self.scopes[node] = (qualified, self.functions[-1] if self.functions else None, [])
        self._record_arguments(node)

    def _qualified_function(self) -> str | None:
        if not self.functions:
            return None
        name = self.functions[-1].name.value
        return f"{self.classes[-1]}.{name}" if self.classes and len(self.functions) == 1 else name

    def _record_arguments(self, node: cst.Call) -> None:
        path = _path(node.func)
        if path is None or path[-1] in ANCHORS | {"rpc", "select", "eq", "execute", "print"}:
            return
        callee = path[-1]
        if len(path) == 1 and callee in self.facts.imports and self.facts.imports[callee][1] != "*":
            callee = self.facts.imports[callee][1]
        for index, arg in enumerate(a for a in node.args if a.keyword is None):
            value = _string(arg.value)
            start, end = self._span(arg.value)
            if value is not None:
                plain = (
                    isinstance(arg.value, cst.SimpleString)
                    and arg.value.prefix == ""
                    and arg.value.quote in ('"', "'")
                    and arg.value.value[1:-1] == value
                )
                self.facts.call_arguments.append(
                    CallArgument(callee, index, value, start_byte=start, end_byte=end, literal=plain)
                )
                continue
            ref_path = _path(arg.value)
            if ref_path is None:
                continue
            resolved = lookup(self.facts.symbols, ref_path)[0]
            if resolved is None and ref_path[0] in self.facts.imports:
                module, imported = self.facts.imports[ref_path[0]]
                reference = Reference("import", ref_path[0], ref_path[1:], module, imported)
                self.facts.call_arguments.append(
                    CallArgument(callee, index, None, reference, start_byte=start, end_byte=end)
                )
            else:
                self.facts.call_arguments.append(CallArgument(callee, index, resolved, start_byte=start, end_byte=end))

    # -- records ----------------------------------------------------------------------------

    def finish(self) -> None:
        for anchor in self.anchors:
            self._record(anchor)

    def _span(self, node: cst.CSTNode) -> tuple[int, int]:
        span = self.spans[node]
        return span.start, span.start + span.length

    def _parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        return self.parents.get(node)

    def _climb(self, start: cst.BaseExpression) -> tuple[list[tuple[str, cst.Call | None]], cst.CSTNode]:
        """`.method(...)` steps above a node (and the `not_` property); returns the steps and the top."""
        steps: list[tuple[str, cst.Call | None]] = []
        current: cst.CSTNode = start
        while True:
            parent = self._parent(current)
            if not isinstance(parent, cst.Attribute) or parent.value is not current:
                break
            method = from_python(parent.attr.value)
            grand = self._parent(parent)
            if isinstance(grand, cst.Call) and grand.func is parent:
                steps.append((method, grand))
                current = grand
            elif parent.attr.value == "not_":
                steps.append(("not", None))
                current = parent
            else:
                break
        return steps, current

    def _record(self, anchor: cst.Call) -> None:
        func = anchor.func
        assert isinstance(func, cst.Attribute)
        receiver = func.value
        qualified, function, _ = self.scopes[anchor]
        args = [a for a in anchor.args if a.keyword is None]
        steps, top = self._climb(anchor)
        position = self.positions[func.attr].start
        code = self.source[slice(*self._span(top))].decode("utf-8", "replace").strip()
        if isinstance(receiver, cst.Attribute) and receiver.attr.value == "storage" and func.attr.value == "from_":
            self._side(anchor, "storage", args, steps, receiver.value, code, qualified, position)
            return
        if func.attr.value == "rpc":
            self._side(anchor, "rpc", args, [], receiver, code, qualified, position)
            return
        if len(args) != 1 or len(anchor.args) != 1 or (isinstance(receiver, cst.Name) and receiver.value[:1].isupper()):
            # supabase-py's table() and from_() take exactly one argument: `sa.table("t", sa.column("id"))`
            # is SQLAlchemy; `Model.table(x)`, `Array.from_(x)` are classes, not clients.
            return
        schema = None
        if (
            isinstance(receiver, cst.Call)
            and isinstance(receiver.func, cst.Attribute)
            and receiver.func.attr.value == "schema"
        ):
            schema = _string(receiver.args[0].value) if receiver.args else None
            receiver = receiver.func.value
        variable, escapes = self._variable(top, function, steps)
        kind, table, resolution, reference = self._table(args[0].value, function)
        record = self._call_site(anchor, receiver, args[0].value, steps, top, code, qualified, position)
        record = _with(record, table, kind, resolution, schema, variable, escapes)
        if reference is not None:
            self.facts.pending[len(self.facts.calls)] = reference
        self.facts.calls.append(record)

    def _side(self, anchor, kind, args, steps, client, code, qualified, position) -> None:
        self.facts.side_calls.append(
            SideCall(
                file=self.rel,
                line=position.line,
                column=position.column + 1,
                kind=kind,
                name=_string(args[0].value) if args else None,
                operation=steps[0][0] if steps and kind == "storage" else None,
                client=cst.Module([]).code_for_node(client),
                code=code,
                function=qualified,
            )
        )

    def _variable(self, top, function, steps) -> tuple[str | None, bool]:
        """`q = client.table('t').select()` … `q = q.eq(…)` … `q.execute()`: the later steps join the chain."""
        parent = self._parent(top)
        if not (
            isinstance(parent, cst.Assign)
            and len(parent.targets) == 1
            and isinstance(parent.targets[0].target, cst.Name)
        ):
            return None, isinstance(parent, cst.Return | cst.Arg) and not any(
                m in WRITES or m == "select" for m, _ in steps
            )
        if any(m == "execute" for m, _ in steps):
            return None, False  # the variable holds the response, not a builder
        name = parent.targets[0].target.value
        scope = function if function is not None else None
        if scope is None:
            return name, False
        end = self._span(top)[1]
        escapes = False
        uses = [n for n in _names(scope, name) if self._span(n)[0] >= end]
        for use in sorted(uses, key=lambda n: self._span(n)[0]):
            holder = self._parent(use)
            if isinstance(holder, cst.Attribute) and holder.value is use:
                more, _ = self._climb(use)
                steps.extend(more)
            elif isinstance(holder, cst.Arg | cst.Return):
                escapes = True
        return name, escapes

    def _table(self, node, function) -> tuple[str, str | None, str | None, Reference | None]:
        if isinstance(node, cst.SimpleString | cst.ConcatenatedString):
            return "literal", _string(node), None, None
        if isinstance(node, cst.FormattedString):
            value = _string(node)
            return (
                ("template", value, None, None)
                if value is not None
                else ("dynamic", None, "an f-string computed at run time", None)
            )
        path = _path(node)
        if path is None:
            return "dynamic", None, "the table name is computed at run time", None
        value, kind = lookup(self.facts.symbols, path)
        if value is not None:
            return kind, value, f"{'.'.join(path)} defined in this module", None
        if path[0] in self.facts.imports:
            module, imported = self.facts.imports[path[0]]
            return "dynamic", None, None, Reference("import", path[0], path[1:], module, imported)
        if function is not None and len(path) == 1:
            params = [p.name.value for p in function.params.params]
            if path[0] in params:
                index = params.index(path[0]) - (1 if params and params[0] in ("self", "cls") else 0)
                return "dynamic", None, None, Reference("param", function.name.value, (), param_index=index)
        return "dynamic", None, f"{'.'.join(path)} is not a constant dualshift can resolve", None

    def _call_site(self, anchor, receiver, table_arg, steps, top, code, qualified, position) -> CallSite:
        select: list[str] = []
        write: list[str] = []
        filters: list[Filter] = []
        conflict: list[str] = []
        embedded: list[str] = []
        for method, call in steps:
            if call is None:
                continue
            positional = [a.value for a in call.args if a.keyword is None]
            keywords = {a.keyword.value: a.value for a in call.args if a.keyword is not None}
            first = positional[0] if positional else None
            if method == "select":
                parsed = parse_select(", ".join(t for a in positional if (t := _string(a)) is not None))
                select.extend(c for c in parsed.columns if c not in select)
                embedded.extend(t for t in parsed.embedded if t not in embedded)
            elif method in ("insert", "upsert", "update"):
                write.extend(k for k in _dict_keys(first or keywords.get("json")) if k not in write)
                text = _string(keywords.get("on_conflict"))
                if text:
                    conflict.extend(c.strip() for c in text.split(",") if c.strip())
            elif method in COLUMN_FILTERS or method == "order":
                if method == "order":
                    continue
                value = cst.Module([]).code_for_node(positional[-1]) if len(positional) > 1 else None
                filters.append(Filter(method, filter_column(_string(first)), value))
            elif method == "match":
                filters.extend(Filter("match", k, None) for k in _dict_keys(first))
            elif method == "or":
                text = _string(first)
                names = columns_in_filter_expression(text) if text else ()
                filters.extend(Filter("or", n, text) for n in names)
        spans = (self._span(top), self._span(receiver), self._span(table_arg))
        read = ChainRead(select, write, filters, conflict, embedded)
        methods = [m for m, _ in steps]
        return chain_record(
            self.rel, self.source, (position.line, position.column + 1), spans, methods, read, code, qualified
        )


def _with(record: CallSite, table, kind, resolution, schema, variable, escapes) -> CallSite:
    from dataclasses import replace

    return replace(
        record,
        table=table,
        table_kind=kind,
        resolution=resolution,
        schema=schema,
        builder_variable=variable,
        crosses_function=escapes,
    )


def _names(scope: cst.CSTNode, name: str) -> list[cst.Name]:
    found: list[cst.Name] = []

    class Finder(cst.CSTVisitor):
        def visit_Name(self, node: cst.Name) -> None:
            if node.value == name:
                found.append(node)

    scope.visit(Finder())
    return found
