"""Where a rewritten file imports the wrapper from, in a single service and in a monorepo.

A relative import is written only inside one package (the nearest `package.json`): an import that
climbs into another package does not resolve under workspaces and bundlers. Across packages the
specifier comes from the user (`--import '@acme/db/dualWrite'`) or from the file's `tsconfig.json`
`compilerOptions.paths` (followed through `extends`); otherwise the file is refused with the reason.
With a wrapper per package, each file imports the wrapper at the same path inside its own package.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import json5  # tsconfig.json is JSON with comments and trailing commas

from dualshift.codemods.imports import module_specifier

SCRIPT_SUFFIX = re.compile(r"\.(ts|tsx|mts|cts|js|jsx|mjs|cjs)$")


class UnresolvableImport(ValueError):
    """The wrapper cannot be imported from this file by any specifier dualshift can prove."""


@dataclass(frozen=True)
class ImportTarget:
    root: Path
    wrapper: str  # POSIX, relative to ROOT (or, per package, to each package's folder)
    specifier: str | None = None  # given by the user: used as it is
    per_package: bool = False
    _packages: dict[str, str] = field(default_factory=dict, compare=False)

    def wrapper_for(self, rel: str) -> str:
        """The wrapper a file imports, relative to ROOT."""
        if not self.per_package:
            return self.wrapper
        return posixpath.normpath(posixpath.join(self.package_of(rel), self.wrapper))

    def specifier_for(self, rel: str) -> str:
        if self.specifier:
            return self.specifier
        wrapper = self.wrapper_for(rel)
        if self.package_of(rel) == self.package_of(wrapper):
            return module_specifier(rel, wrapper)
        mapped = _paths_specifier(self.root, rel, wrapper)
        if mapped is not None:
            return mapped
        raise UnresolvableImport(
            f"the wrapper {wrapper} is in package {self.package_of(wrapper) or '(root)'}, not in this file's"
            f" package {self.package_of(rel) or '(root)'}: a relative import would not resolve; give"
            " --import SPECIFIER, add a tsconfig.json `paths` entry for it, or use --wrapper-per-package"
        )

    def package_of(self, rel: str) -> str:
        """The folder (relative to ROOT) of the nearest package.json above a file; "" for the root."""
        folder = posixpath.dirname(rel)
        if folder not in self._packages:
            self._packages[folder] = _nearest(self.root, folder, "package.json") or ""
        return self._packages[folder]


def _nearest(root: Path, folder: str, name: str) -> str | None:
    while True:
        if (root / folder / name).is_file():
            return folder
        if folder in ("", "."):
            return None
        folder = posixpath.dirname(folder)


def _paths_specifier(root: Path, rel: str, wrapper: str) -> str | None:
    """A `paths` pattern of the file's tsconfig.json whose target is the wrapper: `@acme/db/*` → `@acme/db/dualWrite`."""
    folder = _nearest(root, posixpath.dirname(rel), "tsconfig.json")
    if folder is None:
        return None
    base, paths = _compiler_paths(root / folder / "tsconfig.json")
    target = _stem(root / wrapper)
    for pattern, replacements in paths.items():
        for replacement in replacements:
            captured = _captured(base, replacement, target)
            if captured is not None:
                return pattern.replace("*", captured, 1)
    return None


def _stem(path: Path) -> str:
    return SCRIPT_SUFFIX.sub("", os.path.normpath(path.as_posix()))


def _captured(base: Path, replacement: str, target: str) -> str | None:
    """What `*` stands for when `replacement` (relative to base) names the target; "" for an exact match."""
    if "*" not in replacement:
        return "" if _stem(base / replacement) == target else None
    prefix, suffix = replacement.split("*", 1)
    head = os.path.normpath((base / prefix).as_posix()) + ("/" if prefix.endswith("/") else "")
    tail = SCRIPT_SUFFIX.sub("", suffix)
    if target.startswith(head) and target.endswith(tail) and len(target) > len(head) + len(tail):
        return target[len(head) : len(target) - len(tail)]
    return None


@lru_cache(maxsize=256)
def _compiler_paths(tsconfig: Path) -> tuple[Path, dict[str, list[str]]]:
    """(the folder `paths` are relative to, the merged `paths`), following `extends` to relative files."""
    try:
        data = json5.loads(tsconfig.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # a broken tsconfig is named, never read as "no paths"
        raise UnresolvableImport(f"{tsconfig}: cannot read its compilerOptions.paths: {exc}") from exc
    options = data.get("compilerOptions") or {}
    parent_base, parent_paths = tsconfig.parent, {}
    extends = data.get("extends")
    if isinstance(extends, str) and extends.startswith("."):
        parent = (tsconfig.parent / extends).resolve()
        parent = parent if parent.suffix == ".json" else parent.with_suffix(".json")
        parent_base, parent_paths = _compiler_paths(parent)
    if "paths" not in options:
        base = tsconfig.parent / options["baseUrl"] if "baseUrl" in options else parent_base
        return base, parent_paths
    base = tsconfig.parent / options.get("baseUrl", ".")
    return base, {k: list(v) for k, v in options["paths"].items() if isinstance(v, list)}
