"""The wrap codemod: route write call sites on planned old tables through `dualWrite(client)`."""

from __future__ import annotations

from dualshift.analyzer.records import CallSite
from dualshift.codemods.edits import Edit, apply_edits
from dualshift.codemods.imports import add_import, module_specifier
from dualshift.codemods.result import Rewrite, SkippedSite
from dualshift.plan import Plan

WRAPPER_NAME = "dualWrite"
PYTHON_WRAPPER_NAME = "dual_write"


def is_wrapped(call: CallSite) -> bool:
    name = PYTHON_WRAPPER_NAME if call.language == "python" else WRAPPER_NAME
    return call.client.replace(" ", "").startswith(f"{name}(")


def _planned(call: CallSite, plan: Plan) -> bool:
    tables = call.resolved_tables or ((call.table,) if call.table else ())
    return any(t in plan.table_mapping for t in tables)


def callers_reason(call: CallSite, plan: Plan) -> str:
    """Why a helper whose table is a parameter stays wrapped: rewriting its one `from(table)` to a literal
    would send every caller's rows to one table, whatever table each caller passes."""
    passed = ", ".join(f"{t} → {plan.table_mapping.get(t, 'not in the plan')}" for t in call.resolved_tables)
    return (
        f"the table is the helper's parameter and its callers pass {passed}: change each caller to the new"
        " table (and its column names), then remove the wrapper by hand"
    )


def why_not(call: CallSite, plan: Plan, reads: bool) -> str | None:
    """None when the site is wrapped; otherwise why it is left alone ("" for sites that are no concern)."""
    if not (call.is_write or (reads and call.operation == "select")):
        return ""
    if call.table is None:
        return "the table name is known only at run time; wrap the client by hand if it can reach a planned table"
    if not _planned(call, plan):
        return ""
    if call.crosses_function:
        return "the builder is passed to or returned from another function; wrap where the client is created"
    if call.operation == "unknown":
        return "no operation in this chain"
    return None


def receiver_edits(
    calls: list[CallSite], plan: Plan, reads: bool, name: str
) -> tuple[list[Edit], list[SkippedSite], int]:
    """`client` → `name(client)` at every site to wrap; the sites left alone, with their reasons."""
    edits: list[Edit] = []
    skipped: list[SkippedSite] = []
    done: set[tuple[int, int]] = set()
    for call in calls:
        if is_wrapped(call):
            continue
        reason = why_not(call, plan, reads)
        if reason == "":
            continue
        if reason is not None:
            skipped.append(SkippedSite(call.line, call.table, reason))
            continue
        span = (call.receiver_start, call.receiver_end)
        if span in done:
            continue  # one site resolved to several tables: one rewrite
        done.add(span)
        edits.append(Edit(call.receiver_start, call.receiver_start, f"{name}("))
        edits.append(Edit(call.receiver_end, call.receiver_end, ")"))
    return edits, skipped, len(done)


def wrap_typescript(
    source: str,
    rel_path: str,
    calls: list[CallSite],
    plan: Plan,
    wrapper_path: str,
    reads: bool,
    specifier: str | None = None,
) -> Rewrite:
    """`specifier`, when given, is what the import names (a monorepo's package path); by default the
    wrapper's path relative to the file."""
    edits, skipped, count = receiver_edits(calls, plan, reads, WRAPPER_NAME)
    if not edits:
        return Rewrite(source, 0, tuple(skipped))
    rewritten = apply_edits(source.encode("utf-8"), edits).decode("utf-8")
    rewritten = add_import(rewritten, WRAPPER_NAME, specifier or module_specifier(rel_path, wrapper_path))
    return Rewrite(rewritten, count, tuple(skipped))
