"""Whole-tree resolution of table names: imported constants and helper parameters.

`typescript.analyze` resolves what one file can; what needs another module is left as a
Reference. Here the modules meet: an imported name is looked up in the module it comes from,
and a table name that is a helper's parameter is resolved from every call of that helper.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import replace

from dualshift.analyzer.records import CallerArgument, CallSite
from dualshift.analyzer.typescript import CallArgument, ModuleFacts, Reference, lookup

_MODULE_SUFFIXES = (".ts", ".tsx", ".mts", ".cts", ".js", ".jsx", ".mjs", ".cjs", ".py")
_ALIAS_PREFIXES = {"@/": ("src/", ""), "~/": ("src/", ""), "src/": ("src/",)}


def _module_key(path: str) -> str:
    for suffix in _MODULE_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


class ModuleIndex:
    def __init__(self, modules: Mapping[str, ModuleFacts]) -> None:
        self.modules = modules
        self.by_key = {_module_key(path): path for path in modules}
        self.consulted: set[str] | None = None  # when tracked: the files whose facts a resolution read

    def find(self, importer: str, specifier: str) -> str | None:
        """The scanned file an import specifier names, or None (a package, or outside the tree)."""
        candidates: list[str] = []
        if specifier.startswith("."):
            candidates.append(posixpath.normpath(posixpath.join(posixpath.dirname(importer), specifier)))
        else:
            for prefix, replacements in _ALIAS_PREFIXES.items():
                if specifier.startswith(prefix):
                    candidates.extend(r + specifier[len(prefix) :] for r in replacements)
            candidates.append(specifier)  # a Python package path from the root: app/config/tables
        for candidate in candidates:
            key = _module_key(candidate)
            for option in (key, f"{key}/index", f"{key}/__init__"):
                if option in self.by_key:
                    return self.by_key[option]
        return None

    def resolve_import(self, importer: str, reference: Reference, depth: int = 0) -> tuple[str | None, str, str]:
        """(value, kind, resolution) for an imported name, following re-imports a few levels."""
        target = self.find(importer, reference.module)
        if target is None or depth > 4:
            return None, "dynamic", f"{reference.name} is imported from {reference.module}, outside the scanned tree"
        if self.consulted is not None:
            self.consulted.add(target)
        facts = self.modules[target]
        path = reference.path if reference.imported == "*" else (reference.imported, *reference.path)
        if not path:
            return None, "dynamic", f"{reference.name} is a namespace import"
        value, kind = lookup(facts.symbols, path)
        if value is not None:
            spelled = ".".join((reference.name, *reference.path))
            return value, "imported" if kind == "constant" else kind, f"{spelled} imported from {target}"
        if path[0] in facts.imports:
            module, imported = facts.imports[path[0]]
            onward = Reference("import", path[0], path[1:], module, imported)
            return self.resolve_import(target, onward, depth + 1)
        return None, "dynamic", f"{reference.name} from {target} is not a string constant"


def resolve(
    modules: Mapping[str, ModuleFacts],
    only: Collection[str] | None = None,
    helper_files: Collection[str] | None = None,
    caller_files: Collection[str] | None = None,
    consulted: dict[str, set[str]] | None = None,
) -> list[CallSite]:
    """Every call of every module (or of the modules `only` names) with its table resolved as far as the
    whole tree allows. An incremental caller that knows which files hold a helper's parameter reference
    (`helper_files`) and which hold call arguments (`caller_files`) passes them so that no other module is
    read; `consulted` then receives, for each resolved file, the other files its resolution depended on."""
    index = ModuleIndex(modules)
    arguments, argument_sources = _arguments_by_callee(index, modules if caller_files is None else caller_files)
    definers: dict[str, set[str]] = defaultdict(set)  # helper name → files defining a helper of that name
    for path in modules if helper_files is None else helper_files:
        for reference in modules[path].pending.values():
            if reference.kind == "param":
                definers[reference.name].add(path)
    resolved: list[CallSite] = []
    for path in sorted(modules if only is None else only):
        facts = modules[path]
        index.consulted = used = set()
        for position, call in enumerate(facts.calls):
            reference = facts.pending.get(position)
            if reference is None:
                resolved.append(call)
            elif reference.kind == "import":
                value, kind, how = index.resolve_import(path, reference)
                resolved.append(replace(call, table=value, table_kind=kind, resolution=how))  # type: ignore[arg-type]
            else:
                callers = arguments.get(reference.name, [])
                if len(definers[reference.name]) > 1:  # same name in several files: keep the callers of this one
                    callers = [(p, a) for p, a in callers if _may_call_into(index, p, path)]
                used.update(definers[reference.name])
                for caller, _ in arguments.get(reference.name, []):
                    used.update(argument_sources[caller])
                resolved.extend(_from_callers(call, reference, callers))
        if consulted is not None:
            consulted[path] = used - {path}
    index.consulted = None
    return resolved


def _arguments_by_callee(
    index: ModuleIndex, caller_files: Collection[str]
) -> tuple[dict[str, list[tuple[str, CallArgument]]], dict[str, set[str]]]:
    """Call arguments by callee name, and for each calling file the files its arguments were read from."""
    by_callee: dict[str, list[tuple[str, CallArgument]]] = defaultdict(list)
    sources: dict[str, set[str]] = {}
    for path in caller_files:
        index.consulted = sources[path] = {path}
        for argument in index.modules[path].call_arguments:
            if argument.reference is not None:
                value, _, _ = index.resolve_import(path, argument.reference)
                argument = replace(argument, value=value, reference=None)
            by_callee[argument.callee].append((path, argument))
    index.consulted = None
    return by_callee, sources


def _may_call_into(index: ModuleIndex, caller: str, helper_file: str) -> bool:
    """A call can reach a helper of another file only through something imported from that file."""
    if caller == helper_file:
        return True
    return any(index.find(caller, module) == helper_file for module, _ in index.modules[caller].imports.values())


def _from_callers(call: CallSite, reference: Reference, arguments: list[tuple[str, CallArgument]]) -> list[CallSite]:
    """One record per table the helper's callers pass, or the call left dynamic."""
    callers = [(p, a) for p, a in arguments if a.index == reference.param_index]
    values = [a.value for _, a in callers]
    parameter = call.table_expression
    if not callers or any(v is None for v in values):
        why = (
            f"parameter {parameter} of {reference.name}: no caller passes a resolvable table name"
            if not callers
            else f"parameter {parameter} of {reference.name}: some callers pass a name known only at run time"
        )
        return [replace(call, table=None, table_kind="dynamic", resolution=why)]
    tables = tuple(sorted({v for v in values if v is not None}))
    files = sorted({p for p, _ in callers})
    how = (
        f"parameter {parameter} of {reference.name}; {len(callers)} call(s) in "
        f"{', '.join(files)} pass {', '.join(tables)}"
    )
    passed = tuple(
        sorted(
            {CallerArgument(p, a.start_byte, a.end_byte, a.value, a.literal) for p, a in callers},
            key=lambda a: (a.file, a.start_byte, a.table or ""),
        )
    )
    return [
        replace(
            call, table=table, table_kind="callers", resolution=how, resolved_tables=tables, caller_arguments=passed
        )
        for table in tables
    ]
