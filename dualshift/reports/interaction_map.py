"""DATABASE_INTERACTION_MAP.json: the seeds' map (001, Task 1.1) done right, plus the records codemods need."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualshift import __version__
from dualshift.analyzer.records import CallerArgument, CallSite, Filter, ParseFailure, SideCall

MAP_FORMAT = 1
DEFAULT_NAME = "DATABASE_INTERACTION_MAP.json"
SCHEMA_PATH = Path(__file__).parent / "schema" / "interaction_map.schema.json"
TOP = 20

# The seeds' four buckets; an upsert counts as an update there.
_BUCKETS = {"select": "reads", "insert": "writes", "update": "updates", "upsert": "updates", "delete": "deletes"}


@dataclass
class LoadedMap:
    root: str
    files_scanned: int
    calls: list[CallSite] = field(default_factory=list)
    side_calls: list[SideCall] = field(default_factory=list)
    failures: list[ParseFailure] = field(default_factory=list)


def tables_read(call: CallSite) -> list[str]:
    """The tables a call reads: its own for a select, and every embedded resource."""
    tables = [call.table] if call.operation == "select" and call.table else []
    return tables + [t for t in call.embedded if t not in tables]


def summarize(result: Any) -> dict[str, int]:
    """The seeds' summary of a scan (what `build_map` puts under `summary`)."""
    return _tally(result)[0]


def _tally(result: Any) -> tuple[dict[str, int], dict[str, list[dict[str, Any]]], Counter[str], Counter[str]]:
    calls: list[CallSite] = list(result.calls)
    interactions: dict[str, list[dict[str, Any]]] = {"reads": [], "writes": [], "updates": [], "deletes": []}
    per_table: Counter[str] = Counter()
    per_file: Counter[str] = Counter()
    for call in calls:
        per_file[call.file] += 1
        bucket = _BUCKETS.get(call.operation)
        if call.table:
            per_table[call.table] += 1
        for embedded in call.embedded:
            if embedded != call.table:
                per_table[embedded] += 1
                interactions["reads"].append(_interaction(call, embedded))
        if bucket and call.table:
            interactions[bucket].append(_interaction(call, call.table))
    summary = {
        "totalInteractions": len(calls),
        "callSites": len({(c.file, c.start_byte) for c in calls}),
        "totalTables": len(per_table),
        "totalFiles": len(per_file),
        "filesScanned": result.files_scanned,
        "reads": len(interactions["reads"]),
        "writes": len(interactions["writes"]),
        "updates": len(interactions["updates"]),
        "deletes": len(interactions["deletes"]),
        "dynamic": sum(1 for c in calls if c.table is None),
        "storageCalls": sum(1 for c in result.side_calls if c.kind == "storage"),
        "rpcCalls": sum(1 for c in result.side_calls if c.kind == "rpc"),
        "failedFiles": sum(1 for f in result.failures if f.counts_as_failed),
        "grammarGaps": sum(1 for f in result.failures if not f.counts_as_failed),
    }
    return summary, interactions, per_table, per_file


def _head(result: Any) -> dict[str, Any]:
    summary, interactions, per_table, per_file = _tally(result)
    return {
        "format": MAP_FORMAT,
        "version": __version__,
        "tool": f"dualshift {__version__}",
        "root": Path(result.root).name,
        "summary": summary,
        "topTables": [{"table": t, "queries": n} for t, n in _ranked(per_table)],
        "topFiles": [{"file": f, "queries": n} for f, n in _ranked(per_file)],
        "interactions": interactions,
    }


def _records(result: Any) -> dict[str, Iterator[dict[str, Any]]]:
    """The one-record-per-line lists, produced lazily so that a big map is never whole in memory."""
    return {
        "calls": (c.to_dict() for c in result.calls),
        **_side_records(result),
    }


def _side_records(result: Any) -> dict[str, Iterator[dict[str, Any]]]:
    return {
        "storage_calls": (c.to_dict() for c in result.side_calls if c.kind == "storage"),
        "rpc_calls": (c.to_dict() for c in result.side_calls if c.kind == "rpc"),
        "failures": (f.to_dict() for f in result.failures),
    }


def _encoded_records(result: Any) -> dict[str, Iterator[str]]:
    """`_records` as JSON lines; a call is encoded from its fields as they are, without `to_dict`."""
    encoded = {key: map(_RECORD_ENCODER.encode, records) for key, records in _side_records(result).items()}
    return {"calls": (_CALL_ENCODER.encode(c.field_values()) for c in result.calls), **encoded}


def build_map(result: Any) -> dict[str, Any]:
    """The map as a JSON-ready dict, from a ScanResult (or anything with the same attributes)."""
    return {**_head(result), **{key: list(records) for key, records in _records(result).items()}}


def _ranked(counter: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:TOP]


def _interaction(call: CallSite, table: str) -> dict[str, Any]:
    first_line = call.code.splitlines()[0].strip() if call.code else ""
    return {"file": call.file, "lineNum": call.line, "table": table, "code": first_line}


_ONE_PER_LINE = ("calls", "storage_calls", "rpc_calls", "failures")


# `json.dumps(record, ensure_ascii=False)` builds an encoder on every call; one encoder gives the same
# text, and records hold no reference cycles to look for.
_RECORD_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)
_encode_string = json.encoder.encode_basestring  # how that encoder writes a string


def _filter_record(value: object) -> dict[str, Any]:
    if isinstance(value, Filter | CallerArgument):
        return value.to_dict()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# A call's field values (tuples, Filter and CallerArgument records) encode to the same text as its `to_dict()`: the encoder
# writes tuples as arrays, and turns each record into the dict `to_dict` would hold.
_CALL_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False, default=_filter_record)


def _indented(value: Any, level: int = 0) -> str:
    """`json.dumps(value, indent=2, ensure_ascii=False)`, byte for byte, for str-keyed dicts, lists and
    scalars, in two thirds of the time: the standard library indents with its pure-Python encoder, and
    a big map's head holds one small dict per interaction."""
    if isinstance(value, str):
        return _encode_string(value)
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        if not value:
            return "{}"
        inner = "\n" + "  " * (level + 1)
        items = [_encode_string(key) + ": " + _indented_item(item, level + 1) for key, item in value.items()]
        return "{" + inner + ("," + inner).join(items) + "\n" + "  " * level + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        inner = "\n" + "  " * (level + 1)
        items = [_indented_item(item, level + 1) for item in value]
        return "[" + inner + ("," + inner).join(items) + "\n" + "  " * level + "]"
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__repr__(value)
    return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + "  " * level)


def _indented_item(item: Any, level: int) -> str:
    # The scalars most items are, without a call of `_indented` each.
    kind = type(item)
    if kind is str:
        return _encode_string(item)
    if kind is int:
        return int.__repr__(item)
    return _indented(item, level)


def _chunks(head: dict[str, Any], lines: dict[str, Iterable[str]]) -> Iterator[str]:
    """Indented JSON, except that each record of the long lists stands on one line (`lines` holds them
    encoded): diffable, and fast to write (the C encoder does the records)."""
    yield _indented(head)[:-2]  # without the closing "\n}"
    for key in _ONE_PER_LINE:
        yield f',\n  "{key}": ['
        first = True
        for line in lines.get(key, ()):
            yield ("\n    " if first else ",\n    ") + line
            first = False
        yield "]" if first else "\n  ]"
    yield "\n}\n"


def render_map(data: dict[str, Any]) -> str:
    head = {k: v for k, v in data.items() if k not in _ONE_PER_LINE}
    return "".join(_chunks(head, {k: map(_RECORD_ENCODER.encode, data.get(k, [])) for k in _ONE_PER_LINE}))


def write_map(result: Any, out: Path) -> None:
    """Stream the map to a temporary file and rename it: a reader never sees half a file, and a big
    map is never whole in memory."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=out.parent, delete=False, suffix=".tmp") as handle:
        for chunk in _chunks(_head(result), _encoded_records(result)):
            handle.write(chunk)
    os.replace(handle.name, out)


class MapError(ValueError):
    pass


def load_map(path: Path) -> LoadedMap:
    """Read a map back into records; raises MapError naming the file and the problem."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MapError(f"{path}: cannot read map: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MapError(f"{path}: not a JSON interaction map: {exc}") from exc
    if not isinstance(data, dict) or "calls" not in data:
        raise MapError(f"{path}: not a dualshift interaction map (no `calls`); run `dualshift scan` to make one")
    try:
        return LoadedMap(
            root=str(data.get("root", "")),
            files_scanned=int(data.get("summary", {}).get("filesScanned", 0)),
            calls=[CallSite.from_dict(c) for c in data["calls"]],
            side_calls=[SideCall.from_dict(c) for c in [*data.get("storage_calls", []), *data.get("rpc_calls", [])]],
            failures=[ParseFailure(**f) for f in data.get("failures", [])],
        )
    except (TypeError, KeyError) as exc:
        raise MapError(f"{path}: malformed call record: {exc}") from exc
