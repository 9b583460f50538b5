"""supabase-py call sites: `client.table('t')`, `client.from_('t')`, `.schema('s').table('t')`.

The same records as the TypeScript analyzer, into the same map: chains over several lines and
through parentheses and `await`, builders kept in a variable and extended later, `.execute()` as the
end of the chain, the `not_` property, columns from dict keys, select strings and filters,
`on_conflict`, `storage.from_()` and `rpc()` listed apart. Table names from literals, module-level
constants, names imported from other modules of the tree and helper parameters are resolved by the
same whole-tree resolver as TypeScript (`resolve.py`).

Read with the standard library's `ast` (a C parser): positions are UTF-8 byte columns with end
positions, so byte spans come from line starts and columns from the line's text. A byte search
decides whether a file can hold a table call at all; only then are parents linked. The records are
the ones the LibCST reading in `tests/analyzer/cst_reference.py` gives (the codemods rewrite those spans with LibCST);
`tests/analyzer/test_python.py` holds the two readings equal.
"""

from __future__ import annotations

import ast
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property

from dualshift.analyzer.postgrest import COLUMN_FILTERS, from_python
from dualshift.analyzer.records import CallSite, FileResult, Filter, ParseFailure, SideCall
from dualshift.analyzer.resolve import resolve
from dualshift.analyzer.select_string import columns_in_filter_expression, filter_column, parse_select
from dualshift.analyzer.typescript import CallArgument, ModuleFacts, Reference, lookup

ANCHORS = frozenset({"table", "from_"})
SIDE_ANCHORS = ANCHORS | {"rpc"}
WRITES = ("insert", "upsert", "update", "delete")
UNRECORDED_CALLEES = SIDE_ANCHORS | {"select", "eq", "execute", "print"}
ANCHOR_BYTES = (b"table", b"from_", b"rpc")
BOM = b"\xef\xbb\xbf"
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def analyze_python(rel_path: str, source: bytes) -> FileResult:
    """One Python file on its own (names imported from other files stay unresolved)."""
    facts = analyze_module(rel_path, source)
    failure = ParseFailure(rel_path, facts.syntax_error) if facts.syntax_error else None
    return FileResult(rel_path, resolve({rel_path: facts}), list(facts.side_calls), failure)


@dataclass
class ChainRead:
    """What one chain's method calls name: columns read, written and filtered on, and embedded tables."""

    select: list[str]
    write: list[str]
    filters: list[Filter]
    conflict: list[str]
    embedded: list[str]


def chain_record(
    rel: str,
    source: bytes,
    position: tuple[int, int],
    spans: tuple[tuple[int, int], tuple[int, int], tuple[int, int]],
    methods: list[str],
    read: ChainRead,
    code: str,
    function: str | None,
) -> CallSite:
    """The record of one chain, its table not yet resolved, from what a reading of the source found:
    (line, column), byte spans of the whole call, its client and its table argument. A pure data step,
    shared with the LibCST reading the tests compare this module with (tests/analyzer/cst_reference.py)."""
    (start, end), (receiver_start, receiver_end), (arg_start, arg_end) = spans
    operation = next((w for w in WRITES if w in methods), "select" if "select" in methods else "unknown")
    columns = list(read.select)
    for name in [*read.write, *(f.column for f in read.filters if f.column), *read.conflict]:
        if name not in columns:
            columns.append(name)
    return CallSite(
        file=rel,
        line=position[0],
        column=position[1],
        start_byte=start,
        end_byte=end,
        receiver_start=receiver_start,
        receiver_end=receiver_end,
        table_arg_start=arg_start,
        table_arg_end=arg_end,
        table=None,
        table_kind="dynamic",
        table_expression=source[arg_start:arg_end].decode("utf-8", "replace"),
        operation=operation,
        chain=("from", *methods),
        client=source[receiver_start:receiver_end].decode("utf-8", "replace"),
        language="python",
        code=code,
        function=function,
        columns=tuple(columns),
        select_columns=tuple(read.select),
        write_columns=tuple(read.write),
        filters=tuple(read.filters),
        on_conflict=tuple(read.conflict),
        embedded=tuple(read.embedded),
    )


class _PythonFacts(ModuleFacts):
    syntax_error: str | None = None
    arguments_read: bool = True  # False: call_arguments were left out (see analyze_module)


def analyze_module(rel_path: str, source: bytes, with_arguments: bool = True) -> _PythonFacts:
    """`with_arguments=False`, for a file whose bytes name no `table`/`from_`/`rpc`: only the module's
    constants and imports are read (its statements, not its expressions); the arguments of its calls
    matter only if it calls a helper that takes a table name, and the scan reads them then, as it does
    for TypeScript files."""
    facts = _PythonFacts()
    if source.startswith(BOM):
        source = source[len(BOM) :]  # offsets count from after the mark, as LibCST's do
    try:
        # Parsed as text: a coding declaration must not change the columns, which count UTF-8 bytes.
        tree = ast.parse(source.decode("utf-8"))
    except (SyntaxError, ValueError) as exc:  # ValueError: not UTF-8, NUL bytes
        facts.syntax_error = _syntax_error(source, exc)
        return facts
    module = _Module(rel_path, source, tree, facts)
    if with_arguments or any(word in source for word in ANCHOR_BYTES):
        module.read()
    else:
        module.read_module_facts()
        facts.arguments_read = False
    return facts


def _syntax_error(source: bytes, exc: SyntaxError | ValueError) -> str:
    """LibCST's wording (the codemods parse with it), ast's where LibCST's grammar accepts the file."""
    import libcst as cst

    try:
        cst.parse_module(source)
    except cst.ParserSyntaxError as cst_exc:
        return f"syntax error at line {cst_exc.raw_line}: {cst_exc.message}"
    if isinstance(exc, SyntaxError):
        return f"syntax error at line {exc.lineno}: {exc.msg}"
    return f"syntax error: {exc}"


# ---------------------------------------------------------------------------------------------


class _Text:
    """Byte offsets and character columns of `ast` positions (line numbers from 1, byte columns)."""

    def __init__(self, source: bytes) -> None:
        self.source = source

    @cached_property
    def line_starts(self) -> list[int]:
        starts = [0]
        for line in self.source.splitlines(keepends=True):  # \n, \r\n and \r, as Python's tokenizer
            starts.append(starts[-1] + len(line))
        return starts

    def offset(self, line: int, column: int) -> int:
        return self.line_starts[line - 1] + column

    def span(self, node: ast.expr) -> tuple[int, int]:
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def segment(self, node: ast.expr) -> bytes:
        start, end = self.span(node)
        return self.source[start:end]

    def string(self, node: ast.expr | None) -> str | None:
        """A string literal's value; an f-string token without substitutions gives its raw text (as LibCST)."""
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, str) else None
        if isinstance(node, ast.JoinedStr) and not any(isinstance(v, ast.FormattedValue) for v in node.values):
            return _fstring_token(self.segment(node))
        return None

    def path(self, node: ast.expr) -> tuple[str, ...] | None:
        if isinstance(node, ast.Name):
            return (node.id,)
        if isinstance(node, ast.Attribute):
            head = self.path(node.value)
            return None if head is None else (*head, node.attr)
        if isinstance(node, ast.Constant) and (node.value is None or node.value is True or node.value is False):
            return (str(node.value),)  # keywords, but names to LibCST
        if isinstance(node, ast.Subscript):
            head = self.path(node.value)
            key = self.string(node.slice)
            return None if head is None or key is None else (*head, key)
        return None

    def dict_keys(self, node: ast.expr | None) -> list[str]:
        if isinstance(node, ast.List | ast.Tuple):
            keys: list[str] = []
            for element in node.elts:
                value = element.value if isinstance(element, ast.Starred) else element
                keys.extend(k for k in self.dict_keys(value) if k not in keys)
            return keys
        if isinstance(node, ast.Dict):
            return [k for key in node.keys if key is not None and (k := self.string(key)) is not None]
        if isinstance(node, ast.Call) and self.path(node.func) == ("dict",):
            return [name for name, _ in _arguments(node) if name is not None]
        return []

    def character_column(self, line: int, byte_column: int) -> int:
        start = self.line_starts[line - 1]
        return len(self.source[start : start + byte_column].decode("utf-8", "replace"))

    def code(self, node: ast.expr, statement_line: int) -> str:
        """The node's text with its parentheses, as LibCST's `code_for_node` gives it: lines that break
        inside brackets lose the indentation of the statement's block."""
        start, end = self.span(node)
        opening = _openings_before(self.source, start)
        closing = _closings_after(self.source, end)
        pairs = min(len(opening), len(closing))
        if pairs:
            start, end = opening[pairs - 1], closing[pairs - 1]
        text = self.source[start:end]
        indent = self._indentation(statement_line)
        if indent and (b"\n" in text or b"\r" in text):
            text = self._dedent(text, bisect_right(self.line_starts, start), indent, _string_lines(node))
        return text.decode("utf-8", "replace")

    def _indentation(self, line: int) -> bytes:
        start = self.line_starts[line - 1]
        text = self.source[start : self.line_starts[line]] if line < len(self.line_starts) else self.source[start:]
        return text[: len(text) - len(text.lstrip(b" \t\f"))]

    @staticmethod
    def _dedent(text: bytes, first_line: int, indent: bytes, string_lines: set[int]) -> bytes:
        pieces = text.splitlines(keepends=True)
        for number in range(1, len(pieces)):
            continued = pieces[number - 1].rstrip(b"\r\n").endswith(b"\\")  # a backslash keeps its blanks
            if not continued and first_line + number not in string_lines and pieces[number].startswith(indent):
                pieces[number] = pieces[number][len(indent) :]
        return b"".join(pieces)


def _string_lines(node: ast.expr) -> set[int]:
    """Lines that begin inside a multi-line string literal of `node`."""
    lines: set[int] = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.Constant | ast.JoinedStr) and inner.end_lineno > inner.lineno:
            lines.update(range(inner.lineno + 1, inner.end_lineno + 1))
    return lines


def _openings_before(source: bytes, position: int) -> list[int]:
    """Offsets of the `(` right before `position` (nearest first), over blanks and comments."""
    found: list[int] = []
    index = position - 1
    while index >= 0:
        char = source[index]
        if char in b" \t\f\\":
            index -= 1
        elif char in b"\r\n":
            line_start = max(source.rfind(b"\n", 0, index), source.rfind(b"\r", 0, index)) + 1
            comment = _comment_start(source[line_start:index])
            index = (line_start + comment if comment is not None else index) - 1
        elif char == ord("("):
            found.append(index)
            index -= 1
        else:
            break
    return found


def _closings_after(source: bytes, position: int) -> list[int]:
    """Offsets just past the `)` right after `position` (nearest first), over blanks and comments."""
    found: list[int] = []
    index, size = position, len(source)
    while index < size:
        char = source[index]
        if char in b" \t\f\\\r\n":
            index += 1
        elif char == ord("#"):
            newline = [i for i in (source.find(b"\n", index), source.find(b"\r", index)) if i >= 0]
            index = min(newline) if newline else size
        elif char == ord(")"):
            index += 1
            found.append(index)
        else:
            break
    return found


def _comment_start(line: bytes) -> int | None:
    """Where a line's `#` comment begins, outside one-line string literals."""
    quote: int | None = None
    index = 0
    while index < len(line):
        char = line[index]
        if quote is not None:
            if char == ord("\\"):
                index += 1
            elif char == quote:
                quote = None
        elif char in b"'\"":
            quote = char
        elif char == ord("#"):
            return index
        index += 1
    return None


def _fstring_token(segment: bytes) -> str | None:
    """The raw text between the quotes when `segment` is one f-string token; None when it is several."""
    prefix = 0
    while segment[prefix : prefix + 1] in (b"f", b"F", b"r", b"R"):
        prefix += 1
    triple = segment[prefix : prefix + 3]
    quote = triple if triple in (b'"""', b"'''") else segment[prefix : prefix + 1]
    index = prefix + len(quote)
    while index < len(segment):
        if segment[index : index + 1] == b"\\":
            index += 2
        elif segment.startswith(quote, index):
            end = index + len(quote)
            return segment[prefix + len(quote) : index].decode("utf-8", "replace") if end == len(segment) else None
        else:
            index += 1
    return None


def _plain_string(segment: bytes, value: str) -> bool:
    """Whether a string's source is one token in single quotes with no prefix and no escape (`"outcomes"`):
    what unwrap may retarget by replacing its text. Concatenations, f-strings, raw, byte or triple-quoted
    strings and escapes are written by hand."""
    quote = segment[:1]
    return quote in (b'"', b"'") and segment[-1:] == quote and segment[1:-1] == value.encode("utf-8")


def _arguments(call: ast.Call) -> list[tuple[str | None, ast.expr]]:
    """(keyword, value) of every argument in source order; `*x` and `**x` give (None, x)."""
    items: list[tuple[tuple[int, int], str | None, ast.expr]] = []
    for arg in call.args:
        value = arg.value if isinstance(arg, ast.Starred) else arg
        items.append(((arg.lineno, arg.col_offset), None, value))
    for keyword in call.keywords:
        items.append(((keyword.lineno, keyword.col_offset), keyword.arg, keyword.value))
    if call.keywords and call.args:
        items.sort(key=lambda item: item[0])
    return [(name, value) for _, name, value in items]


def _positional(call: ast.Call) -> list[ast.expr]:
    return [value for name, value in _arguments(call) if name is None]


Scope = tuple[tuple[ast.FunctionDef | ast.AsyncFunctionDef, ...], tuple[str, ...]]  # enclosing functions, classes


NOT_CHILDREN = frozenset(
    {"ctx", "op", "ops", "id", "attr", "arg", "name", "names", "kind", "type_comment", "module"}
    | {"is_async", "level", "conversion", "simple", "lineno", "tag", "kwd_attrs", "rest", "asname"}
)
LEAF_TYPES = (ast.Constant, ast.MatchSingleton)  # their `value` is not a node
CHILD_FIELDS: dict[type, tuple[str, ...]] = {
    kind: () if issubclass(kind, LEAF_TYPES) else tuple(f for f in kind._fields if f not in NOT_CHILDREN)
    for kind in vars(ast).values()
    if isinstance(kind, type) and issubclass(kind, ast.AST)
}  # the fields of each node type that can hold nodes with children (names, operators, strings cannot)


def _walk(tree: ast.Module, parents: dict[ast.AST, ast.AST] | None) -> list[tuple[ast.AST, Scope]]:
    """Calls, assignments and imports with their scopes, in source order (LibCST's visiting order).

    `ast.iter_child_nodes` inlined and pruned (this loop is most of the reading's time): statements
    carry the scope, the nodes inside a statement share it.
    """
    found: list[tuple[ast.AST, Scope]] = []
    statements: list[tuple[ast.AST, Scope]] = [(tree, ((), ()))]
    child_fields = CHILD_FIELDS
    stmt = ast.stmt
    node_type = ast.AST
    while statements:
        statement, scope = statements.pop()
        kind = type(statement)
        if kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
            scope = ((*scope[0], statement), scope[1])  # its decorators and defaults too, as LibCST
        elif kind is ast.ClassDef:
            scope = (scope[0], (*scope[1], statement.name))
        nodes = [statement]
        pop, push = nodes.pop, nodes.append
        while nodes:
            node = pop()
            kind = type(node)
            if kind is ast.Call or kind is ast.Assign or kind is ast.ImportFrom or kind is ast.Import:
                found.append((node, scope))
            for field in child_fields.get(kind, ()):
                value = getattr(node, field)
                if type(value) is not list:
                    if value is not None:
                        if parents is not None:
                            parents[value] = node
                        if child_fields.get(type(value)):
                            push(value)
                    continue
                for child in value:
                    if isinstance(child, node_type):
                        if parents is not None:
                            parents[child] = node
                        if isinstance(child, stmt):
                            statements.append((child, scope))
                        elif child_fields.get(type(child)):
                            push(child)
    found.sort(key=lambda item: (item[0].lineno, item[0].col_offset, -item[0].end_lineno, -item[0].end_col_offset))
    return found


def _module_statements(tree: ast.Module) -> Iterator[ast.Assign | ast.ImportFrom | ast.Import]:
    """Assignments and imports outside functions, in source order (what `_walk` gives `read` as
    module facts), found through statements alone."""
    stack: list[ast.AST] = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is ast.Assign or kind is ast.ImportFrom or kind is ast.Import:
            yield node  # type: ignore[misc]
        elif kind is not ast.FunctionDef and kind is not ast.AsyncFunctionDef and kind in BLOCK_FIELDS:
            inner: list[ast.AST] = []
            for field in BLOCK_FIELDS[kind]:
                for child in getattr(node, field):
                    inner.extend(child.body if type(child) in (ast.ExceptHandler, ast.match_case) else (child,))
            stack.extend(reversed(inner))


# Compound statements: the fields holding their statements (handlers and cases hold bodies), in source order.
BLOCK_FIELDS: dict[type, tuple[str, ...]] = {
    kind: tuple(f for f in kind._fields if f in ("body", "orelse", "finalbody", "handlers", "cases"))
    for kind in vars(ast).values()
    if isinstance(kind, type) and issubclass(kind, ast.stmt) and {"body", "cases"} & set(kind._fields)
}


class _Module:
    def __init__(self, rel: str, source: bytes, tree: ast.Module, facts: _PythonFacts) -> None:
        self.rel, self.source, self.tree, self.facts = rel, source, tree, facts
        self.text = _Text(source)
        self.parents: dict[ast.AST, ast.AST] = {}
        self.anchors: list[tuple[ast.Call, Scope]] = []

    def read(self) -> None:
        may_call_tables = any(word in self.source for word in ANCHOR_BYTES)
        for node, scope in _walk(self.tree, self.parents if may_call_tables else None):
            if isinstance(node, ast.Call):
                self._call(node, scope, may_call_tables)
            elif scope[0]:
                continue  # assignments and imports inside functions are not module facts
            elif isinstance(node, ast.Assign):
                self._assign(node)
            else:
                self._import(node)
        for anchor, scope in self.anchors:
            self._record(anchor, scope)

    def read_module_facts(self) -> None:
        for node in _module_statements(self.tree):
            if type(node) is ast.Assign:
                self._assign(node)
            else:
                self._import(node)

    # -- module facts -----------------------------------------------------------------------

    def _assign(self, node: ast.Assign) -> None:
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            return
        value = self._literal(node.value)
        if value is not None:
            self.facts.symbols[node.targets[0].id] = value

    def _literal(self, node: ast.expr) -> object | None:
        text = self.text.string(node)
        if text is not None:
            return text
        if isinstance(node, ast.Dict):
            members = {}
            for key, value in zip(node.keys, node.values, strict=True):
                if key is not None and (name := self.text.string(key)) is not None:
                    inner = self._literal(value)
                    if inner is not None:
                        members[name] = inner
            return members
        return None

    def _import(self, node: ast.ImportFrom | ast.Import) -> None:
        """`from m import x [as y]`: y → (m, x), and `m/x` → (m/x, *) should x be a module; `import a.b [as m]`:
        m → (a/b, *), a namespace, or `a.b` → (a/b, *). Keys with a dot or a slash are never a name looked up:
        they tell which modules a file may call into (two helpers of one name in two modules)."""
        if type(node) is ast.Import:
            for alias in node.names:
                module = alias.name.replace(".", "/")
                self.facts.imports[alias.asname or alias.name] = (module, "*")
            return
        if node.names[0].name == "*":
            return
        module = node.module or ""
        if node.level:
            specifier = ("./" if node.level == 1 else "../" * (node.level - 1)) + module.replace(".", "/")
        else:
            specifier = module.replace(".", "/")
        specifier = specifier.rstrip("/")
        for alias in node.names:
            self.facts.imports[alias.asname or alias.name] = (specifier, alias.name)
            self.facts.imports[f"{specifier}/{alias.name}"] = (f"{specifier}/{alias.name}", "*")

    def _call(self, node: ast.Call, scope: Scope, may_call_tables: bool) -> None:
        func = node.func
        if may_call_tables and isinstance(func, ast.Attribute) and func.attr in SIDE_ANCHORS:
            start = self.text.offset(func.end_lineno, func.end_col_offset) - len(func.attr)
            if self.source[start : start + len(func.attr)] == func.attr.encode():  # not an NFKC-folded name
                self.anchors.append((node, scope))
        self._record_arguments(node)

    def _record_arguments(self, node: ast.Call) -> None:
        path = self.text.path(node.func)
        if path is None or path[-1] in UNRECORDED_CALLEES:
            return
        callee = path[-1]
        if len(path) == 1 and callee in self.facts.imports and self.facts.imports[callee][1] != "*":
            callee = self.facts.imports[callee][1]  # `from m import save_likes as keep`: keep(…) calls save_likes
        add = self.facts.call_arguments.append
        starts = self.text.line_starts
        for index, value in enumerate(_positional(node)):
            literal = self.text.string(value)
            if literal is not None:
                start = starts[value.lineno - 1] + value.col_offset
                end = starts[value.end_lineno - 1] + value.end_col_offset
                plain = type(value) is ast.Constant and _plain_string(self.source[start:end], literal)
                add(CallArgument(callee, index, literal, start_byte=start, end_byte=end, literal=plain))
                continue
            ref_path = self.text.path(value)
            if ref_path is None:
                continue
            start = starts[value.lineno - 1] + value.col_offset
            end = starts[value.end_lineno - 1] + value.end_col_offset
            resolved = lookup(self.facts.symbols, ref_path)[0]
            if resolved is None and ref_path[0] in self.facts.imports:
                module, imported = self.facts.imports[ref_path[0]]
                reference = Reference("import", ref_path[0], ref_path[1:], module, imported)
                add(CallArgument(callee, index, None, reference, start_byte=start, end_byte=end))
            else:
                add(CallArgument(callee, index, resolved, start_byte=start, end_byte=end))

    # -- records ----------------------------------------------------------------------------

    def _is_argument(self, node: ast.AST) -> bool:
        """Whether `node` is passed to a call or a class statement (LibCST's `Arg`) or returned."""
        parent = self.parents.get(node)
        if isinstance(parent, ast.keyword | ast.Return):
            return True
        if isinstance(parent, ast.Starred):
            node, parent = parent, self.parents.get(parent)
        if isinstance(parent, ast.Call):
            return node is not parent.func
        return isinstance(parent, ast.ClassDef) and any(base is node for base in parent.bases)

    def _statement_line(self, node: ast.AST) -> int:
        while not isinstance(node, ast.stmt):
            node = self.parents[node]
        return node.lineno

    def _climb(self, start: ast.expr) -> tuple[list[tuple[str, ast.Call | None]], ast.expr]:
        """`.method(...)` steps above a node (and the `not_` property); returns the steps and the top."""
        steps: list[tuple[str, ast.Call | None]] = []
        current = start
        while True:
            parent = self.parents.get(current)
            if not isinstance(parent, ast.Attribute) or parent.value is not current:
                break
            grand = self.parents.get(parent)
            if isinstance(grand, ast.Call) and grand.func is parent:
                steps.append((from_python(parent.attr), grand))
                current = grand
            elif parent.attr == "not_":
                steps.append(("not", None))
                current = parent
            else:
                break
        return steps, current

    def _position(self, func: ast.Attribute) -> tuple[int, int]:
        """Line and 1-based character column of the method name."""
        byte_column = func.end_col_offset - len(func.attr)
        return func.end_lineno, self.text.character_column(func.end_lineno, byte_column) + 1

    def _record(self, anchor: ast.Call, scope: Scope) -> None:
        func = anchor.func
        assert isinstance(func, ast.Attribute)
        receiver = func.value
        functions, classes = scope
        function = functions[-1] if functions else None
        qualified = None
        if function is not None:
            qualified = f"{classes[-1]}.{function.name}" if classes and len(functions) == 1 else function.name
        arguments = _arguments(anchor)
        args = [value for name, value in arguments if name is None]
        steps, top = self._climb(anchor)
        position = self._position(func)
        code = self.text.segment(top).decode("utf-8", "replace").strip()
        if isinstance(receiver, ast.Attribute) and receiver.attr == "storage" and func.attr == "from_":
            self._side("storage", args, steps, receiver.value, code, qualified, position)
            return
        if func.attr == "rpc":
            self._side("rpc", args, [], receiver, code, qualified, position)
            return
        if len(args) != 1 or len(arguments) != 1 or (isinstance(receiver, ast.Name) and receiver.id[:1].isupper()):
            # supabase-py's table() and from_() take exactly one argument: `sa.table("t", sa.column("id"))`
            # is SQLAlchemy; `Model.table(x)`, `Array.from_(x)` are classes, not clients.
            return
        schema = None
        if (
            isinstance(receiver, ast.Call)
            and isinstance(receiver.func, ast.Attribute)
            and receiver.func.attr == "schema"
        ):
            schema_arguments = _arguments(receiver)
            schema = self.text.string(schema_arguments[0][1]) if schema_arguments else None
            receiver = receiver.func.value
        variable, escapes = self._variable(top, function, steps)
        kind, table, resolution, reference = self._table(args[0], function)
        record = self._call_site(receiver, args[0], steps, top, code, qualified, position)
        record = replace(
            record,
            table=table,
            table_kind=kind,
            resolution=resolution,
            schema=schema,
            builder_variable=variable,
            crosses_function=escapes,
        )
        if reference is not None:
            self.facts.pending[len(self.facts.calls)] = reference
        self.facts.calls.append(record)

    def _side(self, kind, args, steps, client, code, qualified, position) -> None:
        self.facts.side_calls.append(
            SideCall(
                file=self.rel,
                line=position[0],
                column=position[1],
                kind=kind,
                name=self.text.string(args[0]) if args else None,
                operation=steps[0][0] if steps and kind == "storage" else None,
                client=self.text.code(client, self._statement_line(client)),
                code=code,
                function=qualified,
            )
        )

    def _variable(self, top, function, steps) -> tuple[str | None, bool]:
        """`q = client.table('t').select()` … `q = q.eq(…)` … `q.execute()`: the later steps join the chain."""
        parent = self.parents.get(top)
        if not (
            isinstance(parent, ast.Assign) and len(parent.targets) == 1 and isinstance(parent.targets[0], ast.Name)
        ):
            return None, self._is_argument(top) and not any(m in WRITES or m == "select" for m, _ in steps)
        if any(m == "execute" for m, _ in steps):
            return None, False  # the variable holds the response, not a builder
        name = parent.targets[0].id
        if function is None:
            return name, False
        end = self.text.span(top)[1]
        escapes = False
        for start, use in sorted(self._uses(function, name), key=lambda found: found[0]):
            if start < end:
                continue
            holder = self.parents.get(use)
            if isinstance(use, ast.keyword):
                escapes = True  # `f(q=…)`: LibCST's keyword name is a Name inside an Arg
            elif isinstance(holder, ast.Attribute) and holder.value is use:
                more, _ = self._climb(use)
                steps.extend(more)
            elif self._is_argument(use):
                escapes = True
        return name, escapes

    def _uses(self, scope: ast.AST, name: str) -> list[tuple[int, ast.Name | ast.keyword]]:
        """Names spelled `name` in a function (keyword names of calls too), with their byte offsets."""
        found: list[tuple[int, ast.Name | ast.keyword]] = []
        for node in ast.walk(scope):
            if (isinstance(node, ast.Name) and node.id == name) or (isinstance(node, ast.keyword) and node.arg == name):
                found.append((self.text.offset(node.lineno, node.col_offset), node))
        return found

    def _table(self, node, function) -> tuple[str, str | None, str | None, Reference | None]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            return "literal", self.text.string(node), None, None
        if isinstance(node, ast.JoinedStr):
            if _fstring_token(self.text.segment(node)) is None:
                return "literal", None, None, None  # a concatenation holding an f-string
            value = self.text.string(node)
            return (
                ("template", value, None, None)
                if value is not None
                else ("dynamic", None, "an f-string computed at run time", None)
            )
        path = self.text.path(node)
        if path is None:
            return "dynamic", None, "the table name is computed at run time", None
        value, kind = lookup(self.facts.symbols, path)
        if value is not None:
            return kind, value, f"{'.'.join(path)} defined in this module", None
        if path[0] in self.facts.imports:
            module, imported = self.facts.imports[path[0]]
            return "dynamic", None, None, Reference("import", path[0], path[1:], module, imported)
        if function is not None and len(path) == 1:
            params = [p.arg for p in function.args.args]
            if path[0] in params:
                index = params.index(path[0]) - (1 if params and params[0] in ("self", "cls") else 0)
                return "dynamic", None, None, Reference("param", function.name, (), param_index=index)
        return "dynamic", None, f"{'.'.join(path)} is not a constant dualshift can resolve", None

    def _call_site(self, receiver, table_arg, steps, top, code, qualified, position) -> CallSite:
        select: list[str] = []
        write: list[str] = []
        filters: list[Filter] = []
        conflict: list[str] = []
        embedded: list[str] = []
        string = self.text.string
        for method, call in steps:
            if call is None:
                continue
            arguments = _arguments(call)
            positional = [value for name, value in arguments if name is None]
            keywords = {name: value for name, value in arguments if name is not None}
            first = positional[0] if positional else None
            if method == "select":
                parsed = parse_select(", ".join(t for a in positional if (t := string(a)) is not None))
                select.extend(c for c in parsed.columns if c not in select)
                embedded.extend(t for t in parsed.embedded if t not in embedded)
            elif method in ("insert", "upsert", "update"):
                write.extend(k for k in self.text.dict_keys(first or keywords.get("json")) if k not in write)
                text = string(keywords.get("on_conflict"))
                if text:
                    conflict.extend(c.strip() for c in text.split(",") if c.strip())
            elif method in COLUMN_FILTERS or method == "order":
                if method == "order":
                    continue
                value = self.text.code(positional[-1], self._statement_line(call)) if len(positional) > 1 else None
                filters.append(Filter(method, filter_column(string(first)), value))
            elif method == "match":
                filters.extend(Filter("match", k, None) for k in self.text.dict_keys(first))
            elif method == "or":
                text = string(first)
                names = columns_in_filter_expression(text) if text else ()
                filters.extend(Filter("or", n, text) for n in names)
        spans = (self.text.span(top), self.text.span(receiver), self.text.span(table_arg))
        read = ChainRead(select, write, filters, conflict, embedded)
        return chain_record(self.rel, self.source, position, spans, [m for m, _ in steps], read, code, qualified)
