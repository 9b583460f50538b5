"""TypeScript / TSX / JavaScript call sites with tree-sitter.

Every `<receiver>.from(...)` and `<receiver>.rpc(...)` call (also the `await x.from<Row>('t')` shape
that tree-sitter-typescript misparses as `(await x.from)<Row>('t')`) is found from its `from` / `rpc`
token; from each anchor the chain is climbed through the syntax tree. Table names that need other
modules (imports, helper parameters) are left as references for `resolve.py`, which sees the whole tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

import tree_sitter as ts
import tree_sitter_typescript as ts_typescript

from dualshift.analyzer.postgrest import COLUMN_FILTERS
from dualshift.analyzer.records import CallSite, Filter, SideCall
from dualshift.analyzer.select_string import columns_in_filter_expression, filter_column, parse_select

TS_SUFFIXES = {".ts": "typescript", ".mts": "typescript", ".cts": "typescript"}
TSX_SUFFIXES = {".tsx": "tsx", ".jsx": "javascript", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript"}
SUFFIXES = {**TS_SUFFIXES, **TSX_SUFFIXES}

OPERATIONS = ("insert", "upsert", "update", "delete", "select")
FILTERS_WITH_COLUMN = COLUMN_FILTERS
FILTERS_WITH_OBJECT = frozenset({"match"})
FILTERS_WITH_EXPRESSION = frozenset({"or"})
# Receivers that are classes or namespaces, never Supabase clients: `Array.from`, `Buffer.from`, ...
_TRANSPARENT = frozenset({"parenthesized_expression", "non_null_expression", "as_expression", "satisfies_expression"})

# Anchors and module constants are found from bytes of the source, each candidate checked in the syntax
# tree: a few lookups per file instead of a query over every node. A word is a candidate where no ASCII
# letter, digit or `_` touches it, which never hides a real token (the characters around one are no
# identifier characters); a hit inside a longer name (`$from`, `éfrom`) is rejected by the node's span.
_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
# The `=` of every `const NAME = <value>` whose value can be a literal: after unwrapping parentheses,
# `as`, `satisfies`, `!` and `await`, a string, template or object, so the value starts with a quote, a
# brace, a parenthesis or `await`. A comment (`/`) or Unicode white space (any non-ASCII byte) between
# the `=` and the value makes a candidate too; the tree decides.
_CONSTANT_VALUE = re.compile(rb"=\s*(?:['\"`{(/\x80-\xff]|await\b)")
_SYMBOL_VALUE_TYPES = frozenset({"string", "template_string", "object", "as_expression", "satisfies_expression"})
_IDENTIFIER_BYTES = _WORD_BYTES | {0x24}  # and "$"
# Bytes after which (and blanks) `Name.from` starts an expression, so `Name` is the whole receiver. A
# dot, a line break (`x.\n  Name.from`), a comment or a name before it leave the question to the tree.
_STARTS_AN_EXPRESSION = frozenset(b"([{,;:=!?&|+-*%^~<>")

# Module constants in a file with syntax errors, where error recovery can put anything between a
# const's `=` and its value (or leave the `=` out): what the byte search finds in the others.
_SYMBOL_QUERY = """
(lexical_declaration kind: "const" (variable_declarator name: (identifier) @name
  value: [(string) (template_string) (object) (as_expression) (satisfies_expression)] @value))
(enum_declaration name: (identifier) @enum body: (enum_body) @body)
"""
# The arguments of plain calls (only for files that call a helper taking a table name).
_CALL_QUERY = """
(call_expression
  function: [(identifier) @callee (member_expression property: (property_identifier) @callee)]
  arguments: (arguments) @args)
"""


@cache
def _query(grammar: str, text: str) -> ts.Query:
    return ts.Query(_language(grammar), text)


@cache
def _language(grammar: str) -> ts.Language:
    if grammar == "tsx":
        return ts.Language(ts_typescript.language_tsx())
    return ts.Language(ts_typescript.language_typescript())


def grammar_for(suffix: str) -> str:
    return "typescript" if suffix in TS_SUFFIXES else "tsx"


def parse(source: bytes, suffix: str) -> ts.Tree:
    return ts.Parser(_language(grammar_for(suffix))).parse(source)


# ---------------------------------------------------------------------------------------------
# Facts of one module, handed to the resolver


@dataclass(frozen=True)
class Reference:
    """A table name that only the whole tree can resolve."""

    kind: str  # "import" | "param"
    name: str  # the local name (import) or the function's name (param)
    path: tuple[str, ...] = ()  # member path after the imported name: TABLES.USERS.name → ("USERS", "name")
    module: str = ""  # import specifier
    imported: str = ""  # the exported name the local one refers to ("default" for default imports)
    param_index: int = -1


@dataclass(frozen=True)
class CallArgument:
    """A string-valued argument of a call, kept for resolving helper parameters from their callers."""

    callee: str
    index: int
    value: str | None  # the literal, or None when the argument is a reference
    reference: Reference | None = None
    start_byte: int = -1  # the argument's bytes, for unwrap to retarget it; -1 where not kept
    end_byte: int = -1
    literal: bool = False  # written as a string literal (not a constant, an import or an expression)


@dataclass
class ModuleFacts:
    calls: list[CallSite] = field(default_factory=list)
    pending: dict[int, Reference] = field(default_factory=dict)  # index into calls → reference
    side_calls: list[SideCall] = field(default_factory=list)
    symbols: dict[str, object] = field(default_factory=dict)  # const strings, enums, as-const objects
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)  # local → (specifier, exported)
    call_arguments: list[CallArgument] = field(default_factory=list)
    syntax_error_line: int | None = None


# ---------------------------------------------------------------------------------------------
# Small node helpers


class _Parents:
    """Parents of the nodes met on the way down from the root. tree-sitter keeps no parent links:
    `Node.parent` searches down from the root on every call, and following one chain asks for dozens."""

    def __init__(self) -> None:
        self._known: dict[ts.Node, ts.Node] = {}

    def of(self, node: ts.Node) -> ts.Node | None:
        known = self._known.get(node)
        return known if known is not None else node.parent

    def note(self, parent: ts.Node, children: list[ts.Node]) -> None:
        for child in children:
            self._known[child] = parent

    def leaf_at(self, root: ts.Node, start: int) -> ts.Node:
        """The leaf at byte `start` (the one a lookup of its byte range finds), remembering its ancestors."""
        cursor = root.walk()
        node = root
        while cursor.goto_first_child_for_byte(start) is not None:
            child = cursor.node
            self._known[child] = node
            node = child
        return node


def _text(node: ts.Node) -> str:
    return node.text.decode("utf-8", "replace") if node.text is not None else ""


def _unwrap(node: ts.Node) -> ts.Node:
    while node.type in _TRANSPARENT or node.type == "await_expression":
        inner = node.named_children[0] if node.named_children else None
        if inner is None:
            break
        node = inner
    return node


def string_value(node: ts.Node | None) -> str | None:
    """The value of a string literal or a template literal without substitutions."""
    if node is None:
        return None
    node = _unwrap(node)
    if node.type == "string":
        return "".join(_text(c) for c in node.named_children if c.type in ("string_fragment", "escape_sequence"))
    if node.type == "template_string":
        if any(c.type == "template_substitution" for c in node.named_children):
            return None
        return _text(node)[1:-1]
    return None


def _member_path(node: ts.Node) -> tuple[str, ...] | None:
    """`TABLES.USERS.name` → ("TABLES", "USERS", "name"); None for anything else."""
    node = _unwrap(node)
    if node.type == "identifier":
        return (_text(node),)
    if node.type == "member_expression":
        obj = node.child_by_field_name("object")
        prop = node.child_by_field_name("property")
        head = _member_path(obj) if obj is not None else None
        if head is None or prop is None:
            return None
        return (*head, _text(prop))
    if node.type == "subscript_expression":
        obj = node.child_by_field_name("object")
        key = string_value(node.child_by_field_name("index"))
        head = _member_path(obj) if obj is not None else None
        return None if head is None or key is None else (*head, key)
    return None


def _arguments(call: ts.Node) -> list[ts.Node]:
    args = call.child_by_field_name("arguments")
    return [] if args is None else [a for a in args.named_children if a.type != "comment"]


def _line_col(node: ts.Node) -> tuple[int, int]:
    return node.start_point.row + 1, node.start_point.column + 1


# ---------------------------------------------------------------------------------------------
# Module symbols: const strings, enums and `as const` objects


def _literal_value(node: ts.Node) -> object | None:
    value = string_value(node)
    if value is not None:
        return value
    node = _unwrap(node)
    if node.type == "object":
        members: dict[str, object] = {}
        for pair in node.named_children:
            if pair.type != "pair":
                continue
            key_node = pair.child_by_field_name("key")
            value_node = pair.child_by_field_name("value")
            if key_node is None or value_node is None:
                continue
            key = string_value(key_node) if key_node.type == "string" else _text(key_node)
            inner = _literal_value(value_node)
            if inner is not None:
                members[key] = inner
        return members
    return None


def _collect_symbols(declarations: list[tuple[ts.Node, ts.Node, bool]]) -> dict[str, object]:
    """Const strings, `as const` objects and string enums of the module, by name (ambiguous names dropped)."""
    symbols: dict[str, object] = {}
    ambiguous: set[str] = set()

    def remember(name: str, value: object) -> None:
        if name in symbols and symbols[name] != value:
            ambiguous.add(name)
        symbols[name] = value

    for name, value_node, is_enum in declarations:
        if not is_enum:
            literal = _literal_value(value_node)
            if literal is not None:
                remember(_text(name), literal)
            continue
        members: dict[str, object] = {}
        for member in value_node.named_children:
            if member.type == "enum_assignment":
                key = member.child_by_field_name("name")
                value = string_value(member.child_by_field_name("value"))
                if key is not None and value is not None:
                    members[_text(key)] = value
        remember(_text(name), {"__enum__": True, **members})
    for name in ambiguous:
        del symbols[name]
    return symbols


def _declarations(root: ts.Node, source: bytes, grammar: str) -> list[tuple[ts.Node, ts.Node, bool]]:
    """(name, value, is_enum) of every `const NAME = <value>` that can hold a literal (the value a
    string, template, object, `as` or `satisfies` expression) and every `enum NAME { ... }` (its body as
    value), in the order of their values. A file with syntax errors is queried (see `_SYMBOL_QUERY`)."""
    if root.has_error:
        return _queried_declarations(root, grammar)
    found: list[tuple[ts.Node, ts.Node, bool]] = []
    for match in _CONSTANT_VALUE.finditer(source):
        equals = _token_node(root, match.start(), match.start() + 1)
        declarator = equals.parent if equals is not None and equals.type == "=" else None
        if declarator is None or declarator.type != "variable_declarator":
            continue
        declaration = declarator.parent
        if declaration is None or declaration.type != "lexical_declaration":
            continue
        kind = declaration.child_by_field_name("kind")
        name = declarator.child_by_field_name("name")
        value = declarator.child_by_field_name("value")
        if kind is None or kind.type != "const" or name is None or name.type != "identifier" or value is None:
            continue
        if value.type in _SYMBOL_VALUE_TYPES:
            found.append((name, value, False))
    for start in _word_positions(source, b"enum"):
        keyword = _token_node(root, start, start + 4)
        parent = keyword.parent if keyword is not None and keyword.type == "enum" else None
        if parent is None or parent.type != "enum_declaration":
            continue
        name = parent.child_by_field_name("name")
        body = parent.child_by_field_name("body")
        if name is not None and name.type == "identifier" and body is not None and body.type == "enum_body":
            found.append((name, body, True))
    # A const nested in another's value comes after it, as a walk of the tree meets them.
    found.sort(key=lambda declaration: declaration[1].start_byte)
    return found


def _queried_declarations(root: ts.Node, grammar: str) -> list[tuple[ts.Node, ts.Node, bool]]:
    found: list[tuple[ts.Node, ts.Node, bool]] = []
    for _, captures in ts.QueryCursor(_query(grammar, _SYMBOL_QUERY)).matches(root):
        if "name" in captures:
            found.append((captures["name"][0], captures["value"][0], False))
        else:
            found.append((captures["enum"][0], captures["body"][0], True))
    return found


def _word_positions(source: bytes, word: bytes) -> list[int]:
    """Where `word` stands alone in the bytes (`bytes.find` is many times faster than a regex `\\b`)."""
    positions = []
    size, length = len(word), len(source)
    start = source.find(word)
    while start >= 0:
        end = start + size
        if (start == 0 or source[start - 1] not in _WORD_BYTES) and (end == length or source[end] not in _WORD_BYTES):
            positions.append(start)
        start = source.find(word, end)
    return positions


def _token_node(root: ts.Node, start: int, end: int) -> ts.Node | None:
    """The leaf spanning exactly these bytes, or None when they are part of a longer token."""
    node = root.descendant_for_byte_range(start, end)
    if node is None or node.start_byte != start or node.end_byte != end:
        return None
    return node


def _collect_imports(root: ts.Node) -> dict[str, tuple[str, str]]:
    imports: dict[str, tuple[str, str]] = {}
    for statement in root.named_children:
        if statement.type != "import_statement":
            continue
        source = string_value(statement.child_by_field_name("source"))
        clause = next((c for c in statement.named_children if c.type == "import_clause"), None)
        if source is None or clause is None:
            continue
        for part in clause.named_children:
            if part.type == "identifier":
                imports[_text(part)] = (source, "default")
            elif part.type == "named_imports":
                for spec in part.named_children:
                    if spec.type != "import_specifier":
                        continue
                    name = spec.child_by_field_name("name")
                    alias = spec.child_by_field_name("alias")
                    if name is not None:
                        imports[_text(alias or name)] = (source, _text(name))
            elif part.type == "namespace_import":
                ident = next((c for c in part.named_children if c.type == "identifier"), None)
                if ident is not None:
                    imports[_text(ident)] = (source, "*")
    return imports


def lookup(symbols: dict[str, object], path: tuple[str, ...]) -> tuple[str | None, str]:
    """Follow a member path through module symbols: (value, kind) or (None, "")."""
    value: object = symbols.get(path[0])
    is_enum = isinstance(value, dict) and bool(value.get("__enum__"))
    for key in path[1:]:
        if not isinstance(value, dict):
            return None, ""
        value = value.get(key)
    if not isinstance(value, str):
        return None, ""
    if len(path) == 1:
        return value, "constant"
    return value, "enum" if is_enum else "object_member"


# ---------------------------------------------------------------------------------------------
# Functions: names and parameters


_FUNCTION_TYPES = frozenset(
    {
        "function_declaration",
        "function_expression",
        "arrow_function",
        "method_definition",
        "generator_function_declaration",
    }
)


def _enclosing_function(node: ts.Node, parents: _Parents) -> ts.Node | None:
    current = parents.of(node)
    while current is not None:
        if current.type in _FUNCTION_TYPES:
            return current
        current = parents.of(current)
    return None


def _function_name(function: ts.Node | None, parents: _Parents) -> str | None:
    if function is None:
        return None
    name = function.child_by_field_name("name")
    if function.type == "method_definition" and name is not None:
        body = parents.of(function)
        owner = parents.of(body) if body is not None else None
        owner_name = owner.child_by_field_name("name") if owner is not None else None
        return f"{_text(owner_name)}.{_text(name)}" if owner_name is not None else _text(name)
    if name is not None:
        return _text(name)
    parent = parents.of(function)
    if parent is not None and parent.type == "variable_declarator":
        declared = parent.child_by_field_name("name")
        return _text(declared) if declared is not None else None
    if parent is not None and parent.type in ("pair", "public_field_definition"):
        key = parent.child_by_field_name("key") or parent.child_by_field_name("name")
        return _text(key) if key is not None else None
    # An anonymous callback (`useEffect(() => ...)`, an IIFE) belongs to the function around it.
    return _function_name(_enclosing_function(function, parents), parents)


def _parameter_index(function: ts.Node, name: str) -> int:
    params = function.child_by_field_name("parameters")
    if params is None:
        single = function.child_by_field_name("parameter")
        return 0 if single is not None and _text(single) == name else -1
    for index, param in enumerate(params.named_children):
        pattern = param.child_by_field_name("pattern") if param.type != "identifier" else param
        if pattern is not None and _text(pattern) == name:
            return index
    return -1


def _callable_name(function: ts.Node, parents: _Parents) -> str | None:
    """The bare name callers use: `insertRow` for `async insertRow(...)` or `const insertRow = ...`."""
    qualified = _function_name(function, parents)
    return qualified.rsplit(".", 1)[-1] if qualified else None


# ---------------------------------------------------------------------------------------------
# Chains


@dataclass
class _Step:
    method: str
    call: ts.Node


def _method_of(call: ts.Node, symbols: dict[str, object] | None = None) -> str | None:
    function = call.child_by_field_name("function")
    if function is None:
        return None
    function = _unwrap(function) if function.type != "await_expression" else function.named_children[0]
    if function.type == "member_expression":
        prop = function.child_by_field_name("property")
        return _text(prop) if prop is not None else None
    if function.type == "subscript_expression":
        index = function.child_by_field_name("index")
        value = string_value(index)
        if value is None and index is not None and index.type == "identifier" and symbols:
            constant = symbols.get(_text(index))
            value = constant if isinstance(constant, str) else None
        return value
    return None


def _climb(start: ts.Node, parents: _Parents, symbols: dict[str, object] | None = None) -> tuple[list[_Step], ts.Node]:
    """Follow `.method(...)` calls upward from `start`; return the steps and the outermost call."""
    steps: list[_Step] = []
    current = start
    while True:
        parent = parents.of(current)
        while parent is not None and parent.type in _TRANSPARENT:
            current, parent = parent, parents.of(parent)
        if parent is None or parent.type not in ("member_expression", "subscript_expression"):
            break
        if parent.child_by_field_name("object") != current:
            break
        call = parents.of(parent)
        if call is None or call.type != "call_expression" or call.child_by_field_name("function") != parent:
            break
        method = _method_of(call, symbols)
        if method is None:
            break
        steps.append(_Step(method, call))
        current = call
    return steps, current


def _outermost(node: ts.Node, parents: _Parents) -> ts.Node:
    parent = parents.of(node)
    while parent is not None and parent.type in _TRANSPARENT:
        node, parent = parent, parents.of(parent)
    return node


def _bound_variable(chain_top: ts.Node, parents: _Parents) -> str | None:
    """The variable a builder is stored in: `const q = <chain>` or `q = <chain>`."""
    node = _outermost(chain_top, parents)
    parent = parents.of(node)
    if parent is None:
        return None
    if parent.type == "variable_declarator" and parent.child_by_field_name("value") == node:
        name = parent.child_by_field_name("name")
        return _text(name) if name is not None and name.type == "identifier" else None
    if parent.type == "assignment_expression" and parent.child_by_field_name("right") == node:
        left = parent.child_by_field_name("left")
        return _text(left) if left is not None and left.type == "identifier" else None
    return None


def _continuations(
    variable: str, chain_top: ts.Node, scope: ts.Node, symbols: dict[str, object], parents: _Parents
) -> tuple[list[_Step], bool]:
    """Later uses of a builder variable: `q = q.eq(...)`, `await q.insert(row)`; and whether it escapes."""
    steps: list[_Step] = []
    escapes = False
    stack = [scope]
    uses: list[ts.Node] = []
    while stack:
        node = stack.pop()
        if node.end_byte <= chain_top.end_byte and node is not scope:
            continue
        if node.type == "identifier" and _text(node) == variable and node.start_byte >= chain_top.end_byte:
            uses.append(node)
        children = node.named_children
        parents.note(node, children)
        stack.extend(children)
    for use in sorted(uses, key=lambda n: n.start_byte):
        parent = parents.of(use)
        while parent is not None and parent.type in _TRANSPARENT:
            use, parent = parent, parents.of(parent)
        if parent is None:
            continue
        if parent.type in ("member_expression", "subscript_expression") and parent.child_by_field_name("object") == use:
            more, _ = _climb(use, parents, symbols)
            steps.extend(more)
        elif parent.type in ("arguments", "return_statement", "pair", "array", "shorthand_property_identifier") or (
            parent.type == "arrow_function" and parent.child_by_field_name("body") == use
        ):
            escapes = True
    return steps, escapes


# ---------------------------------------------------------------------------------------------
# Columns and filters


def _object_keys(node: ts.Node | None) -> list[str]:
    if node is None:
        return []
    node = _unwrap(node)
    if node.type == "array":
        keys: list[str] = []
        for element in node.named_children:
            keys.extend(k for k in _object_keys(element) if k not in keys)
        return keys
    if node.type != "object":
        return []
    keys = []
    for member in node.named_children:
        if member.type == "pair":
            key = member.child_by_field_name("key")
            if key is None:
                continue
            name = string_value(key) if key.type in ("string", "template_string") else _text(key)
            if key.type == "computed_property_name":
                continue
            if name and name not in keys:
                keys.append(name)
        elif member.type == "shorthand_property_identifier" and _text(member) not in keys:
            keys.append(_text(member))
    return keys


def _option(node: ts.Node | None, name: str) -> ts.Node | None:
    if node is None:
        return None
    node = _unwrap(node)
    if node.type != "object":
        return None
    for member in node.named_children:
        if member.type == "pair":
            key = member.child_by_field_name("key")
            if key is not None and (_text(key) == name or string_value(key) == name):
                return member.child_by_field_name("value")
    return None


@dataclass
class _Columns:
    select: list[str] = field(default_factory=list)
    write: list[str] = field(default_factory=list)
    filters: list[Filter] = field(default_factory=list)
    on_conflict: list[str] = field(default_factory=list)
    embedded: list[str] = field(default_factory=list)


def _read_columns(steps: list[_Step]) -> _Columns:
    found = _Columns()
    for step in steps:
        args = _arguments(step.call)
        first = args[0] if args else None
        if step.method == "select":
            text = string_value(first)
            if text is not None:
                parsed = parse_select(text)
                found.select.extend(c for c in parsed.columns if c not in found.select)
                found.embedded.extend(t for t in parsed.embedded if t not in found.embedded)
        elif step.method in ("insert", "upsert", "update"):
            found.write.extend(k for k in _object_keys(first) if k not in found.write)
            if step.method == "upsert" and len(args) > 1:
                conflict = string_value(_option(args[1], "onConflict"))
                if conflict:
                    found.on_conflict.extend(c.strip() for c in conflict.split(",") if c.strip())
        elif step.method in FILTERS_WITH_COLUMN:
            column = string_value(first)
            value = _text(args[-1]) if len(args) > 1 else None
            if step.method == "not" and column is not None and "," in column:
                for name in columns_in_filter_expression(column):
                    found.filters.append(Filter(step.method, name, value))
            else:
                found.filters.append(Filter(step.method, filter_column(column), value))
        elif step.method in FILTERS_WITH_OBJECT:
            for key in _object_keys(first):
                found.filters.append(Filter(step.method, key, None))
        elif step.method in FILTERS_WITH_EXPRESSION:
            text = string_value(first)
            names = columns_in_filter_expression(text) if text is not None else ()
            found.filters.extend(Filter(step.method, name, text) for name in names)
            if not names:
                found.filters.append(Filter(step.method, None, _text(first) if first is not None else None))
    return found


def _operation(methods: list[str]) -> str:
    for operation in ("insert", "upsert", "update", "delete"):
        if operation in methods:
            return operation
    return "select" if "select" in methods else "unknown"


# ---------------------------------------------------------------------------------------------
# The file


def _is_class_like(receiver: ts.Node) -> bool:
    """`Array.from`, `Buffer.from`, `Uint8Array.from`, `Observable.from`: classes, not clients."""
    node = _unwrap(receiver)
    if node.type == "identifier":
        name = _text(node)
        return name[:1].isupper()
    return node.type in ("new_expression", "array", "string", "template_string", "number")


def analyze(rel_path: str, source: bytes, suffix: str, with_arguments: bool = True) -> ModuleFacts:
    """Everything one file holds. `with_arguments=False` skips the arguments of plain calls, which only
    matter for files that call a helper taking a table name (see `call_arguments`)."""
    tree = parse(source, suffix)
    if tree.root_node.has_error and grammar_for(suffix) == "tsx":
        tree, source = _recover_bare_ampersands(tree, source, suffix)
    root = tree.root_node
    language = SUFFIXES[suffix]
    symbols = _collect_symbols(_declarations(root, source, grammar_for(suffix)))
    facts = ModuleFacts(symbols=symbols, imports=_collect_imports(root))
    if root.has_error:
        facts.syntax_error_line = _first_error_line(root)
    parents = _Parents()
    for call, receiver, method in _anchors(root, source, parents):
        if root.has_error and _inside_error(call, parents):
            continue
        if method == "rpc":
            _record_rpc(facts, rel_path, call, receiver, parents)
        else:
            _record_from(facts, rel_path, call, receiver, language, parents)
    if with_arguments:
        _collect_call_arguments(facts, _call_matches(root, grammar_for(suffix)))
    return facts


def call_arguments(rel_path: str, source: bytes, suffix: str) -> list[CallArgument]:
    """The arguments of a file's plain calls (for files that call a helper taking a table name)."""
    return analyze(rel_path, source, suffix, with_arguments=True).call_arguments


def _anchors(root: ts.Node, source: bytes, parents: _Parents) -> list[tuple[ts.Node, ts.Node, str]]:
    """(call, receiver, "from" | "rpc") of every `<receiver>.from(...)` / `.rpc(...)` call whose receiver
    is not class-like (also the misparsed `(await <receiver>.from)<Row>(...)`), in the order of their
    argument lists."""
    found: list[tuple[ts.Node, ts.Node, str]] = []
    words = [(start, "from") for start in _word_positions(source, b"from")]
    words += [(start, "rpc") for start in _word_positions(source, b"rpc")]
    words.sort()
    settled_by_bytes = not root.has_error  # error recovery can make `{ Array.from(` an object's member
    for start, method in words:
        if settled_by_bytes and _after_class_name(source, start):
            continue  # `Array.from(`, `Buffer.from(`: most hits, settled without the tree
        token = parents.leaf_at(root, start)
        if token.start_byte != start or token.end_byte != start + len(method) or token.type != "property_identifier":
            continue
        member = parents.of(token)
        if member is None or member.type != "member_expression" or member.child_by_field_name("property") != token:
            continue
        receiver = member.child_by_field_name("object")
        if receiver is None or _is_class_like(receiver):
            continue
        holder = parents.of(member)
        function = holder if holder is not None and holder.type == "await_expression" else member
        call = parents.of(function)
        if call is None or call.type != "call_expression" or call.child_by_field_name("function") != function:
            continue
        arguments = call.child_by_field_name("arguments")
        if arguments is not None and arguments.type == "arguments":
            found.append((call, receiver, method))
    return found


def _after_class_name(source: bytes, start: int) -> bool:
    """Whether the token at `start` follows `Name.` where `Name` (capitalised) starts an expression, so
    that in a tree without errors, if the token is an anchor, its receiver is `Name`, which
    `_is_class_like` rejects. Only what is certain from the bytes: white space other than blanks,
    comments and `?.` leave it to the tree."""
    dot = start - 1
    if dot < 1 or source[dot] != 0x2E:  # "."
        return False
    first = dot
    while first > 0 and source[first - 1] in _IDENTIFIER_BYTES:
        first -= 1
    if first == dot or not 0x41 <= source[first] <= 0x5A:  # "A".."Z"
        return False
    before = first - 1
    while before >= 0 and source[before] in (0x20, 0x09):  # blanks
        before -= 1
    return before < 0 or source[before] in _STARTS_AN_EXPRESSION


def _call_matches(root: ts.Node, grammar: str) -> list[dict[str, list[ts.Node]]]:
    return [captures for _, captures in ts.QueryCursor(_query(grammar, _CALL_QUERY)).matches(root)]


_ENTITY = re.compile(rb"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")


def _recover_bare_ampersands(tree: ts.Tree, source: bytes, suffix: str) -> tuple[ts.Tree, bytes]:
    """tree-sitter's TSX grammar rejects a bare `&` in JSX text (`<p>Terms & conditions</p>`), which
    TypeScript accepts. Inside the error spans, each lone `&` that starts no entity becomes a space (same
    length: every byte offset stays true); the result is kept only if it then parses without error."""
    patched = bytearray(source)
    for start, end in _error_spans(tree.root_node):
        for offset in range(start, end):
            if (
                source[offset : offset + 1] != b"&"
                or b"&" in source[offset - 1 : offset] + source[offset + 1 : offset + 2]
            ):
                continue
            if not _ENTITY.match(source, offset):
                patched[offset] = ord(" ")
    if patched == source:
        return tree, source
    retried = parse(bytes(patched), suffix)
    return (retried, bytes(patched)) if not retried.root_node.has_error else (tree, source)


def _error_spans(root: ts.Node) -> list[tuple[int, int]]:
    spans, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.type == "ERROR":
            spans.append((node.start_byte, node.end_byte))
        elif node.has_error:
            stack.extend(node.children)
    return spans


def _first_error_line(root: ts.Node) -> int:
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            return node.start_point.row + 1
        stack.extend(reversed(node.children))
    return 1


def _inside_error(node: ts.Node, parents: _Parents) -> bool:
    current: ts.Node | None = node
    while current is not None:
        if current.type == "ERROR":
            return True
        current = parents.of(current)
    return False


def _storage_bucket_receiver(receiver: ts.Node) -> ts.Node | None:
    node = _unwrap(receiver)
    if node.type == "member_expression":
        prop = node.child_by_field_name("property")
        if prop is not None and _text(prop) == "storage":
            return node.child_by_field_name("object")
    return None


def _side_call(
    kind: str, rel_path: str, call: ts.Node, top: ts.Node, client: ts.Node, operation: str | None, parents: _Parents
) -> SideCall:
    """A storage or rpc call: listed apart, never counted as a table call."""
    args = _arguments(call)
    line, column = _line_col(_anchor_property(call))
    return SideCall(
        file=rel_path,
        line=line,
        column=column,
        kind=kind,  # type: ignore[arg-type]
        name=string_value(args[0]) if args else None,
        operation=operation,
        client=_text(client),
        code=_text(top).strip(),
        function=_function_name(_enclosing_function(call, parents), parents),
    )


def _anchor_property(call: ts.Node) -> ts.Node:
    """The `from` / `rpc` token of an anchor call (inside the `await` of the misparsed generic form)."""
    function = call.child_by_field_name("function")
    member = function.named_children[0] if function.type == "await_expression" else function
    return member.child_by_field_name("property") or call


def _record_rpc(facts: ModuleFacts, rel_path: str, call: ts.Node, receiver: ts.Node, parents: _Parents) -> None:
    _steps, top = _climb(call, parents)
    facts.side_calls.append(_side_call("rpc", rel_path, call, top, receiver, None, parents))


def _record_from(
    facts: ModuleFacts, rel_path: str, call: ts.Node, receiver: ts.Node, language: str, parents: _Parents
) -> None:
    args = _arguments(call)
    steps, top = _climb(call, parents, facts.symbols)
    line, column = _line_col(_anchor_property(call))
    storage_client = _storage_bucket_receiver(receiver)
    if storage_client is not None:
        operation = steps[0].method if steps else None
        facts.side_calls.append(_side_call("storage", rel_path, call, top, storage_client, operation, parents))
        return
    methods = [s.method for s in steps]
    table_arg = args[0] if args else None
    if table_arg is None:
        return
    literal = string_value(table_arg)
    known_method = any(m in OPERATIONS or m in FILTERS_WITH_COLUMN for m in methods)
    if literal is None and not known_method and not _names_a_string(facts, table_arg):
        return  # `moment(a).from(b)` and friends: not a query builder
    schema, client_node = _schema_of(receiver)
    enclosing = _enclosing_function(call, parents)
    variable = _bound_variable(top, parents)
    escapes = False
    if variable is not None:
        scope = enclosing if enclosing is not None else _program(call, parents)
        more, escapes = _continuations(variable, top, scope, facts.symbols, parents)
        steps = steps + more
    else:
        escapes = _escapes(top, parents) and not any(m in OPERATIONS for m in methods)
    columns = _read_columns(steps)
    chain = ("from", *(s.method for s in steps))
    all_columns = list(columns.select)
    for name in [*columns.write, *(f.column for f in columns.filters if f.column), *columns.on_conflict]:
        if name not in all_columns:
            all_columns.append(name)
    kind, table, resolution, reference = _table_name(facts, table_arg, enclosing, parents)
    outermost = _outermost(top, parents)
    record = CallSite(
        file=rel_path,
        line=line,
        column=column,
        start_byte=outermost.start_byte,
        end_byte=outermost.end_byte,
        receiver_start=client_node.start_byte,
        receiver_end=client_node.end_byte,
        table_arg_start=table_arg.start_byte,
        table_arg_end=table_arg.end_byte,
        table=table,
        table_kind=kind,
        table_expression=_text(table_arg),
        operation=_operation([s.method for s in steps]),  # type: ignore[arg-type]
        chain=chain,
        client=_text(client_node),
        language=language,  # type: ignore[arg-type]
        code=_text(outermost).strip(),
        function=_function_name(enclosing, parents),
        schema=schema,
        columns=tuple(all_columns),
        select_columns=tuple(columns.select),
        write_columns=tuple(columns.write),
        filters=tuple(columns.filters),
        on_conflict=tuple(columns.on_conflict),
        embedded=tuple(columns.embedded),
        resolution=resolution,
        builder_variable=variable,
        crosses_function=escapes,
    )
    if reference is not None:
        facts.pending[len(facts.calls)] = reference
    facts.calls.append(record)


def _names_a_string(facts: ModuleFacts, arg: ts.Node) -> bool:
    """Whether an argument is a constant string of this module or a name imported from another one."""
    path = _member_path(arg)
    if path is None:
        return False
    return lookup(facts.symbols, path)[0] is not None or path[0] in facts.imports


def _escapes(top: ts.Node, parents: _Parents) -> bool:
    """A builder returned or passed on unexecuted: `return db.from('t')`, `run(db.from('t'))`."""
    outermost = _outermost(top, parents)
    parent = parents.of(outermost)
    if parent is None:
        return False
    if parent.type in ("return_statement", "arguments"):
        return True
    return parent.type == "arrow_function" and parent.child_by_field_name("body") == outermost


def _program(node: ts.Node, parents: _Parents) -> ts.Node:
    parent = parents.of(node)
    while parent is not None:
        node, parent = parent, parents.of(parent)
    return node


def _schema_of(receiver: ts.Node) -> tuple[str | None, ts.Node]:
    """`client.schema('s')` → ("s", client); anything else → (None, receiver)."""
    node = _unwrap(receiver)
    if node.type == "call_expression" and _method_of(node) == "schema":
        function = _unwrap(node.child_by_field_name("function"))
        args = _arguments(node)
        inner = function.child_by_field_name("object")
        if inner is not None:
            return (string_value(args[0]) if args else None), inner
    return None, receiver


def _table_name(
    facts: ModuleFacts, arg: ts.Node, enclosing: ts.Node | None, parents: _Parents
) -> tuple[str, str | None, str | None, Reference | None]:
    """(table_kind, table, resolution, reference-for-the-resolver)."""
    unwrapped = _unwrap(arg)
    if unwrapped.type == "string":
        return "literal", string_value(unwrapped), None, None
    literal = string_value(unwrapped)
    if literal is not None:
        return "template", literal, None, None
    path = _member_path(unwrapped)
    if path is None:
        return "dynamic", None, "the table name is computed at run time", None
    value, kind = lookup(facts.symbols, path)
    if value is not None:
        return kind, value, f"{'.'.join(path)} defined in this file", None
    if path[0] in facts.imports:
        module, imported = facts.imports[path[0]]
        return "dynamic", None, None, Reference("import", path[0], path[1:], module, imported)
    if enclosing is not None and len(path) == 1:
        index = _parameter_index(enclosing, path[0])
        name = _callable_name(enclosing, parents)
        if index >= 0 and name:
            return "dynamic", None, None, Reference("param", name, (), param_index=index)
    return "dynamic", None, f"{'.'.join(path)} is not a constant dualshift can resolve", None


def _could_name_a_table(arg: ts.Node) -> bool:
    """Names, member lookups and string templates could carry a table name; numbers, objects and
    functions cannot (keeping them out keeps the per-file facts small)."""
    return _unwrap(arg).type in (
        "identifier",
        "member_expression",
        "subscript_expression",
        "template_string",
        "call_expression",
    )


_NOT_HELPERS = frozenset({"from", "rpc", "select", "eq", "log", "error", "warn", "info", "require", "format"})


def _collect_call_arguments(facts: ModuleFacts, matches: list[dict[str, list[ts.Node]]]) -> None:
    """The arguments of plain calls, for resolving helper parameters from their callers."""
    seen: set[CallArgument] = set()

    def add(argument: CallArgument) -> None:
        if argument not in seen:
            seen.add(argument)
            facts.call_arguments.append(argument)

    for captures in matches:
        callee = _text(captures["callee"][0])
        if callee in _NOT_HELPERS or callee[:1].isupper():  # String(x), Number(x): classes, not helpers
            continue
        imported = facts.imports.get(callee)
        if imported is not None and imported[1] not in ("*", "default"):
            callee = imported[1]  # `import { saveLikes as keep }`: keep(…) calls saveLikes
        arguments = [a for a in captures["args"][0].named_children if a.type != "comment"]
        for index, arg in enumerate(arguments):
            span = {"start_byte": arg.start_byte, "end_byte": arg.end_byte}
            value = string_value(arg)
            if value is not None:
                add(CallArgument(callee, index, value, literal=True, **span))
                continue
            path = _member_path(arg)
            resolved = lookup(facts.symbols, path)[0] if path is not None else None
            if path is not None and resolved is None and path[0] in facts.imports:
                module, imported = facts.imports[path[0]]
                reference = Reference("import", path[0], path[1:], module, imported)
                add(CallArgument(callee, index, None, reference, **span))
            elif resolved is not None or _could_name_a_table(arg):
                # None: a value known only at run time, which keeps the helper's table dynamic.
                add(CallArgument(callee, index, resolved, **span))


# ---------------------------------------------------------------------------------------------
# For codemods: the syntax nodes of a recorded chain


@dataclass(frozen=True)
class ChainNodes:
    from_call: ts.Node
    steps: tuple[tuple[str, ts.Node], ...]  # (method, call node) after `from`

    def arguments(self, call: ts.Node) -> list[ts.Node]:
        return _arguments(call)


def chain_at(tree: ts.Tree, table_arg_start: int, table_arg_end: int, symbols: dict[str, object]) -> ChainNodes | None:
    """The chain whose table argument spans these bytes (as recorded in a CallSite)."""
    node = tree.root_node.descendant_for_byte_range(table_arg_start, table_arg_end)
    while node is not None and node.type != "arguments":
        node = node.parent
    call = node.parent if node is not None else None
    if call is None or call.type != "call_expression":
        return None
    steps, _ = _climb(call, _Parents(), symbols)
    return ChainNodes(call, tuple((s.method, s.call) for s in steps))


def module_symbols(tree: ts.Tree, source: bytes, suffix: str) -> dict[str, object]:
    return _collect_symbols(_declarations(tree.root_node, source, grammar_for(suffix)))


def object_pairs(node: ts.Node | None) -> list[tuple[str, ts.Node, ts.Node | None]]:
    """(key, key node, value node) of an object literal; shorthand properties have no value node."""
    if node is None:
        return []
    node = _unwrap(node)
    pairs: list[tuple[str, ts.Node, ts.Node | None]] = []
    if node.type != "object":
        return pairs
    for member in node.named_children:
        if member.type == "pair":
            key = member.child_by_field_name("key")
            if key is None or key.type == "computed_property_name":
                continue
            name = string_value(key) if key.type in ("string", "template_string") else _text(key)
            pairs.append((name or "", key, member.child_by_field_name("value")))
        elif member.type == "shorthand_property_identifier":
            pairs.append((_text(member), member, None))
    return pairs


def unwrap_expression(node: ts.Node) -> ts.Node:
    return _unwrap(node)


def error_count(tree: ts.Tree) -> int:
    count = 0
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            count += 1
        if node.has_error:
            stack.extend(node.children)
    return count
