"""The codemod ledger (ROOT/.dualshift/codemods.json): what was previewed and applied, to revert exactly."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

LEDGER_PATH = Path(".dualshift") / "codemods.json"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Applied:
    codemod: str  # wrap | unwrap
    applied_at: str
    original_sha: str
    result_sha: str
    original: str  # the file's text before, for an exact revert


@dataclass
class Ledger:
    root: Path
    applied: dict[str, list[Applied]] = field(default_factory=dict)  # file → applications, oldest first
    previews: dict[str, dict[str, str]] = field(default_factory=dict)  # file → {codemod, sha, at}

    @classmethod
    def load(cls, root: Path) -> Ledger:
        path = root / LEDGER_PATH
        if not path.exists():
            return cls(root)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            applied = {f: [Applied(**entry) for entry in entries] for f, entries in data.get("applied", {}).items()}
            return cls(root, applied, data.get("previews", {}))
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: corrupt codemod ledger ({exc}); move it away to start afresh") from exc

    def save(self) -> None:
        path = self.root / LEDGER_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "applied": {f: [asdict(a) for a in entries] for f, entries in sorted(self.applied.items()) if entries},
            "previews": dict(sorted(self.previews.items())),
        }
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False) as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(handle.name, path)

    def preview(self, rel: str, codemod: str, text: str) -> None:
        self.previews[rel] = {"codemod": codemod, "sha": digest(text), "at": now()}

    def record(self, rel: str, codemod: str, original: str, result: str) -> None:
        entry = Applied(codemod, now(), digest(original), digest(result), original)
        self.applied.setdefault(rel, []).append(entry)
        self.previews.pop(rel, None)

    def last(self, rel: str) -> Applied | None:
        entries = self.applied.get(rel)
        return entries[-1] if entries else None

    def pop(self, rel: str) -> Applied | None:
        entries = self.applied.get(rel)
        return entries.pop() if entries else None
