"""`--baseline FILE`: the findings an existing codebase already has, so `check` fails only on new ones.

The file is JSON (`{"fingerprints": {…: count}}`), written by `--write-baseline`; fingerprints carry no
line numbers, so moving code does not bring its findings back."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from dualshift.guard.rules import Finding


class BaselineError(ValueError):
    pass


def read(path: Path) -> Counter[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read baseline: {exc.strerror}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: not a dualshift baseline (invalid JSON)") from exc
    counts = data.get("fingerprints") if isinstance(data, dict) else None
    if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
        raise BaselineError(f"{path}: not a dualshift baseline (no `fingerprints` map)")
    return Counter(counts)


def write(path: Path, found: list[Finding]) -> None:
    counts = Counter(f.fingerprint for f in found if f.rule != "DS900")
    path.write_text(json.dumps({"fingerprints": dict(sorted(counts.items()))}, indent=2) + "\n", encoding="utf-8")


def new_only(found: list[Finding], known: Counter[str]) -> list[Finding]:
    """The findings beyond the baseline's count of each fingerprint."""
    left = Counter(known)
    kept = []
    for finding in found:
        if left[finding.fingerprint] > 0:
            left[finding.fingerprint] -= 1
        else:
            kept.append(finding)
    return kept
