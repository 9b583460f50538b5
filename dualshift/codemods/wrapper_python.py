"""Render the supabase-py dual-write wrapper from the plan."""

from __future__ import annotations

import pprint
from pathlib import Path

from dualshift import __version__
from dualshift.codemods.wrapper import _ENV, source_maps
from dualshift.plan import Plan


def render_python_wrapper(plan: Plan, flags_schema: str = "dualshift", timeout_ms: int = 2000) -> str:
    return _ENV.get_template("dual_write.py.j2").render(
        version=__version__,
        plan_name=Path(plan.path).name,
        plan_repr=pprint.pformat(source_maps(plan), indent=4, width=110, sort_dicts=True),
        flags_schema=flags_schema,
        timeout_s=timeout_ms / 1000,
        flags_ttl_s=5.0,
    )
