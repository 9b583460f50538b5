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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

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
    def __init__(self, table: NewTable, source: Source, quote: str, rows_elsewhere: bool = False) -> None:
        self.table, self.source, self.quote = table, source, quote
        self.rows_elsewhere = rows_elsewhere  # a helper's rows come from its callers
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
            if self.rows_elsewhere and not self.source.rename:
                return  # the new table names every column of this source as it does: nothing to rename
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


def _column_edits(chain, mapper: _SiteMapper) -> list[Edit]:
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
    return mapper.edits


def _receiver_edit(call: CallSite, raw: bytes) -> Edit:
    """The receiver `dualWrite(x)` becomes `x`."""
    receiver = raw[call.receiver_start : call.receiver_end].decode("utf-8")
    inner = receiver[receiver.index("(") + 1 : receiver.rindex(")")]
    return Edit(call.receiver_start, call.receiver_end, inner)


def _unwrap_site(call: CallSite, chain, plan: Plan, quote: str, raw: bytes) -> list[Edit]:
    new_table = plan.new_table_for(call.table or "")
    if new_table is None:
        raise CannotMap(f"{call.table} is not an old table of the plan")
    edits = _column_edits(chain, _SiteMapper(new_table, new_table.source(call.table), quote))
    edits.append(_receiver_edit(call, raw))
    edits.append(Edit(call.table_arg_start, call.table_arg_end, _quoted(new_table.name, quote)))
    return edits


# ---------------------------------------------------------------------------------------------
# Helpers whose table is a parameter: their callers' arguments are retargeted, not the helper


@dataclass
class CallerRetargets:
    """The whole tree's decisions, made before any file is rewritten: sites whose table the callers pass
    are unwrapped only together with every caller's argument, so each such group of files is written
    together (`groups`) or not at all."""

    edits: dict[str, list[Edit]] = field(default_factory=dict)  # file → edits of the accepted groups
    accepted: set[tuple[str, int]] = field(default_factory=set)  # (file, receiver_start) of unwrapped sites
    reasons: dict[tuple[str, int], str] = field(default_factory=dict)  # sites left as they are, and why
    groups: list[frozenset[str]] = field(default_factory=list)
    arguments: Counter[str] = field(default_factory=Counter)  # file → callers' arguments retargeted

    def own_sites(
        self, rel_path: str, calls: list[CallSite], plan: Plan, skipped: list[SkippedSite]
    ) -> tuple[list[CallSite], int]:
        """The wrapped sites of one file a transform unwraps on its own, each once, and how many of the
        others (those whose table the callers pass, settled by these decisions) are unwrapped; those kept
        go to `skipped`. Shared by the TypeScript and Python transforms."""
        own: list[CallSite] = []
        done = 0
        seen: set[int] = set()
        for call in calls:
            if not is_wrapped(call) or call.receiver_start in seen:
                continue
            seen.add(call.receiver_start)
            if call.table_kind != "callers":
                own.append(call)
            elif (kept := self.kept_site(rel_path, call, plan)) is None:
                done += 1
            else:
                skipped.append(kept)
        return own, done

    def kept_site(self, rel_path: str, call: CallSite, plan: Plan) -> SkippedSite | None:
        """A site whose table its callers pass: None when it is unwrapped with its callers' arguments,
        else the site as it stays, and why (the same words in both languages)."""
        if (rel_path, call.receiver_start) in self.accepted:
            return None
        reason = self.reasons.get((rel_path, call.receiver_start)) or callers_reason(call, plan)
        return SkippedSite(call.line, ", ".join(call.resolved_tables), reason)


def _refusal(call: CallSite, plan: Plan, in_scope: Callable[[str], bool]) -> str | None:
    passed = call.caller_arguments
    unplanned = sorted({f"{a.table} ({a.file})" for a in passed if a.table not in plan.table_mapping})
    if unplanned:
        return f"{callers_reason(call, plan)}; not in the plan: {', '.join(unplanned)}"
    targets = {plan.table_mapping[a.table] for a in passed if a.table is not None}
    if len(targets) > 1:
        return f"{callers_reason(call, plan)}: more than one new table ({', '.join(sorted(targets))})"
    unplaced = sorted({a.file for a in passed if a.start_byte < 0})
    if unplaced:
        return f"{callers_reason(call, plan)}; callers in {', '.join(unplaced)} cannot be rewritten from here"
    not_literal = sorted({a.file for a in passed if not a.literal})
    if not_literal:
        return (
            f"callers in {', '.join(not_literal)} pass the table as a constant or an expression, not a string"
            " literal: change them to the new table by hand, then remove the wrapper"
        )
    outside = sorted({a.file for a in passed if not in_scope(a.file)})
    if outside:
        return f"its callers in {', '.join(outside)} are not among the files to rewrite: include them too"
    return None


def same_edits_for_every_table(
    call: CallSite, plan: Plan, raw: bytes, column_edits: Callable[[NewTable, Source], list[Edit]]
) -> tuple[Edit, ...]:
    """A helper site's column edits (`column_edits` makes them in the site's language), which must be the
    same for every table its callers pass, and its receiver when wrapped."""
    new_table = plan.new_table_for(call.resolved_tables[0])
    assert new_table is not None  # _refusal has checked every table
    found = {tuple(column_edits(new_table, new_table.source(old))) for old in call.resolved_tables}
    if len(found) > 1:
        raise CannotMap(
            f"{', '.join(call.resolved_tables)} name their columns differently in {new_table.name}: the helper"
            " cannot serve them all; split it or change it by hand"
        )
    edits = found.pop()
    return (*edits, _receiver_edit(call, raw)) if is_wrapped(call) else edits


def _site_edits(call: CallSite, plan: Plan, raw: bytes, suffix: str) -> tuple[Edit, ...]:
    if call.language == "python":
        from dualshift.codemods import python_rewrite  # LibCST: only Python trees need it

        return python_rewrite.helper_site_edits(call, plan, raw)
    tree = typescript.parse(raw, suffix)
    symbols = typescript.module_symbols(tree, raw, suffix)
    chain = typescript.chain_at(tree, call.table_arg_start, call.table_arg_end, symbols)
    if chain is None:
        raise CannotMap("the chain could not be found again")
    quote = detect_style(raw.decode("utf-8")).quote

    def column_edits(table: NewTable, source: Source) -> list[Edit]:
        return _column_edits(chain, _SiteMapper(table, source, quote, rows_elsewhere=True))

    return same_edits_for_every_table(call, plan, raw, column_edits)


def _parameter_groups(calls: list[CallSite]) -> dict[frozenset, list[CallSite]]:
    """The sites that take their table from the same callers' arguments (one record per site): retargeting
    those arguments moves every one of them, wrapped or not."""
    groups: dict[frozenset, list[CallSite]] = {}
    seen: set[tuple[str, int]] = set()
    for call in calls:
        if call.table_kind != "callers" or (call.file, call.receiver_start) in seen:
            continue
        seen.add((call.file, call.receiver_start))
        key = frozenset((a.file, a.start_byte, a.end_byte) for a in call.caller_arguments)
        groups.setdefault(key, []).append(call)
    return groups


def _analyzed_bytes(root: Path, rel: str) -> bytes:
    """A file's bytes as the analyzer counted them: a Python file's offsets start after a byte-order mark."""
    raw = (root / rel).read_bytes()
    return raw[3:] if rel.endswith(".py") and raw.startswith(b"\xef\xbb\xbf") else raw


def _group_edits(
    sites: list[CallSite], plan: Plan, root: Path, in_scope: Callable[[str], bool], shared: bool
) -> tuple[dict[str, list[Edit]], str | None]:
    """The edits of one group (its sites and its callers' arguments) by file, or why it stays as it is."""
    if shared:
        return {}, "a caller's argument also reaches another helper: change the callers by hand"
    reason = _refusal(sites[0], plan, in_scope)
    if reason is None:
        outside = sorted({site.file for site in sites if not in_scope(site.file)})
        if outside:
            reason = f"the same table parameter is used in {', '.join(outside)}, not among the files to rewrite"
    if reason is not None:
        return {}, reason
    edits: dict[str, list[Edit]] = {}
    new_table = plan.table_mapping[sites[0].resolved_tables[0]]
    try:
        for site in sites:
            raw = _analyzed_bytes(root, site.file)
            edits.setdefault(site.file, []).extend(_site_edits(site, plan, raw, PurePosixPath(site.file).suffix))
        for argument in sites[0].caller_arguments:
            written = _analyzed_bytes(root, argument.file)[argument.start_byte : argument.end_byte].decode("utf-8")
            if written[:1] not in ("'", '"', "`") or written[1:-1] != argument.table:
                return {}, f"{argument.file} changed since the scan: scan again"
            quoted = _quoted(new_table, written[0])
            edits.setdefault(argument.file, []).append(Edit(argument.start_byte, argument.end_byte, quoted))
    except CannotMap as exc:
        return {}, str(exc)
    except OSError as exc:
        return {}, f"cannot read {exc.filename}: {exc.strerror}"
    return edits, None


def plan_caller_retargets(
    calls: list[CallSite],
    plan: Plan,
    root: Path,
    in_scope: Callable[[str], bool],
    decided: CallerRetargets | None = None,
) -> CallerRetargets:
    """Decide, for the whole tree, every group of wrapped sites whose table the callers pass (TypeScript and
    Python alike: only the edits differ); into `decided` when given (the one the transforms read)."""
    decided = decided if decided is not None else CallerRetargets()
    every_group = _parameter_groups(calls)
    owners = Counter(argument for key in every_group for argument in key)  # wrapped groups or not
    for key, sites in every_group.items():
        if not any(in_scope(site.file) for site in sites if is_wrapped(site)):
            continue
        shared = any(owners[argument] > 1 for argument in key)
        edits, reason = _group_edits(sites, plan, root, in_scope, shared)
        wrapped = [(site.file, site.receiver_start) for site in sites if is_wrapped(site)]
        if reason is not None:
            decided.reasons.update(dict.fromkeys(wrapped, reason))
            continue
        decided.accepted.update(wrapped)
        for file, file_edits in edits.items():
            decided.edits.setdefault(file, []).extend(file_edits)
        decided.groups.append(frozenset(edits))
        decided.arguments.update(a.file for a in sites[0].caller_arguments)
    return decided


def unwrap_typescript(
    source: str,
    rel_path: str,
    calls: list[CallSite],
    plan: Plan,
    wrapper_path: str,
    specifier: str | None = None,
    retargets: CallerRetargets | None = None,
) -> Rewrite:
    """`retargets`: the whole tree's decisions on helpers whose callers pass the table (plan_caller_retargets);
    without them every such helper is left as it is."""
    retargets = retargets or CallerRetargets()
    raw = source.encode("utf-8")
    suffix = PurePosixPath(rel_path).suffix
    tree = typescript.parse(raw, suffix)
    symbols = typescript.module_symbols(tree, raw, suffix)
    quote = detect_style(source).quote
    edits: list[Edit] = []
    skipped: list[SkippedSite] = []
    own, done = retargets.own_sites(rel_path, calls, plan, skipped)
    for call in own:
        if call.table is None and call.resolution:
            skipped.append(SkippedSite(call.line, None, f"{call.resolution}: remove dualWrite( ) by hand"))
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
    edits.extend(retargets.edits.get(rel_path, []))
    done += retargets.arguments[rel_path]
    if not edits:
        return Rewrite(source, 0, tuple(skipped))
    rewritten = apply_edits(raw, edits).decode("utf-8")
    if not re.search(rf"\b{WRAPPER_NAME}\s*\(", rewritten):
        rewritten = remove_import(rewritten, WRAPPER_NAME, specifier or module_specifier(rel_path, wrapper_path))
    return Rewrite(rewritten, done, tuple(skipped))
