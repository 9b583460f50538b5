"""Fault injection for tests: kill the process at a named commit boundary.

`DUALSHIFT_FAULT=cleanup.after_move` makes the executor die with SIGKILL the moment it reaches
`faults.point("cleanup.after_move")`, as a power cut or an OOM kill would, so tests can prove that
every phase resumes or rolls back from every boundary with no row lost. A comma-separated list arms
several points; `NAME@N` fires on the N-th time the point is reached (1 by default). Unset, a point
costs one dictionary lookup.

Point names are `<phase>.<boundary>`; every commit a phase makes has one right after it, and a phase
that runs an outside step (pg_dump) has one right after that step. The tests arm every name in
`POINTS`; a phase that adds a commit adds its point here.
"""

from __future__ import annotations

import os
import signal

ENV = "DUALSHIFT_FAULT"
_reached: dict[str, int] = {}

POINTS: tuple[str, ...] = (
    "create.committed",
    "backfill.sync_prepared",  # after each new table's sync role, grants and functions are committed
    "backfill.sync_installed",  # after each table's triggers are committed (repeatable: NAME@N)
    "backfill.batch_committed",  # after each batch (repeatable)
    "backfill.committed",  # after the phase's state is committed
    "verify.committed",
    "switch.committed",
    "flags.committed",
    "reconcile.committed",
    "cleanup.backup_written",  # pg_dump finished, nothing moved yet
    "cleanup.committed",
    "rollback.committed",
    "finalize.committed",
)


def _armed() -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in os.environ.get(ENV, "").split(","))):
        name, _, nth = item.partition("@")
        armed[name] = int(nth) if nth.isdigit() else 1
    return armed


def point(name: str) -> None:
    """A commit boundary called `name`: die here if the environment says so."""
    if ENV not in os.environ:
        return
    nth = _armed().get(name)
    if nth is None:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
