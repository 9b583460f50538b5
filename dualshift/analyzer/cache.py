"""The scan cache: per-file analysis results keyed by content, and the last result of a whole tree.

One directory per scanned root under $XDG_CACHE_HOME/dualshift/scan/ holds
- `files.pickle`: for every file, (size, mtime, content hash (git's blob id), its analysis); a file whose
  size and mtime are unchanged is not read again (the heuristic git and rsync use), a changed one is
  re-read, and re-analyzed only if its content hash changed;
- `tree.pickle` and `map.json`: the resolved result and the rendered map of the last scan, keyed by
  the whole tree's listing, so that re-scanning an unchanged tree costs a directory walk.
Everything is written atomically; a cache that cannot be read or written only costs speed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualshift import __version__

FORMAT = 3  # 3: content hashes are git blob ids; call sites carry their callers' arguments


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dualshift" / "scan"


def content_hash(data: bytes) -> str:
    """Git's blob id of the bytes: a clean file's id is then in the git index, and a checkout needs no read."""
    digest = hashlib.sha1(b"blob %d\0" % len(data), usedforsecurity=False)
    digest.update(data)
    return digest.hexdigest()


def tree_key(settings: str, listing: list[tuple[str, int, int]]) -> str:
    digest = hashlib.sha256(f"{FORMAT}\0{__version__}\0{settings}\0".encode())
    for rel, size, mtime in listing:
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()


def _load(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError):
        return None


def _dump(path: Path, value: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)
    except OSError:
        pass


@dataclass
class ScanCache:
    folder: Path
    _files: dict[str, tuple[int, int, str, Any]] | None = None  # rel → (size, mtime, sha, value); read lazily
    dirty: bool = False

    @classmethod
    def open(cls, cache_dir: Path, root: Path) -> ScanCache:
        return cls(cache_dir / hashlib.sha256(str(root).encode()).hexdigest()[:24])

    @property
    def files(self) -> dict[str, tuple[int, int, str, Any]]:
        # Only a tree that changed needs the per-file entries; an unchanged one is answered by `tree`.
        if self._files is None:
            stored = _load(self.folder / "files.pickle")
            valid = isinstance(stored, dict) and stored.get("format") == (FORMAT, __version__)
            self._files = stored["files"] if valid else {}
        return self._files

    def unchanged(self, rel: str, size: int, mtime: int) -> Any | None:
        entry = self.files.get(rel)
        return entry[3] if entry is not None and entry[0] == size and entry[1] == mtime else None

    def same_content(self, rel: str, sha: str) -> Any | None:
        entry = self.files.get(rel)
        return entry[3] if entry is not None and entry[2] == sha else None

    def put(self, rel: str, size: int, mtime: int, sha: str, value: Any) -> None:
        self.files[rel] = (size, mtime, sha, value)
        self.dirty = True

    def keep_only(self, rels: set[str]) -> None:
        gone = set(self.files) - rels
        for rel in gone:
            del self.files[rel]
        self.dirty = self.dirty or bool(gone)

    def save(self) -> None:
        if self.dirty and self._files is not None:
            _dump(self.folder / "files.pickle", {"format": (FORMAT, __version__), "files": self.files})

    def tree(self, key: str) -> Any | None:
        # The key is read first, on its own: a tree that changed must not pay for loading the old result.
        try:
            if (self.folder / "tree.key").read_text(encoding="utf-8") != key:
                return None
        except OSError:
            return None
        stored = _load(self.folder / "tree.pickle")
        return stored[1] if isinstance(stored, tuple) and stored[0] == key else None

    def put_tree(self, key: str, result: Any) -> None:
        (self.folder / "tree.key").unlink(missing_ok=True)  # never a key beside another tree's result
        _dump(self.folder / "tree.pickle", (key, result))
        with contextlib.suppress(OSError):  # without its key the result is simply not reused
            (self.folder / "tree.key").write_text(key, encoding="utf-8")

    def map_file(self, key: str) -> Path | None:
        """The map rendered for this tree listing, if the last scan rendered one."""
        try:
            stored_key = (self.folder / "map.key").read_text(encoding="utf-8")
        except OSError:
            return None
        path = self.folder / "map.json"
        return path if stored_key == key and path.exists() else None

    def put_map_file(self, key: str, rendered: Path) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "map.key").unlink(missing_ok=True)  # never a key beside another tree's map
            copy_atomically(rendered, self.folder / "map.json")
            (self.folder / "map.key").write_text(key, encoding="utf-8")
        except OSError:
            pass


def copy_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as handle, open(source, "rb") as original:
        shutil.copyfileobj(original, handle, 1 << 20)
    os.replace(handle.name, target)
