"""Tell gaps in tree-sitter's TypeScript grammar from real syntax errors by asking the TypeScript compiler.

Only files tree-sitter could not parse whole are asked about, all in one node process, with the
`typescript` package the scanned tree (or dualshift's own checkout) has installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

# Reads a JSON list of paths on stdin; prints {"files": {path: first bad line or null}} or {"error": why}.
# A file it cannot read is left out of "files".
_SCRIPT = r"""
const { createRequire } = require('module');
const fs = require('fs');
const path = require('path');
let ts = null;
for (const dir of JSON.parse(process.argv[1])) {
  try { ts = createRequire(path.join(dir, 'noop.js'))('typescript'); break; } catch (e) { /* next */ }
}
if (ts === null) {
  process.stdout.write(JSON.stringify({ error: 'the typescript npm package is not installed' }));
} else {
  const files = {};
  for (const file of JSON.parse(fs.readFileSync(0, 'utf8'))) {
    let text;
    try { text = fs.readFileSync(file, 'utf8'); } catch (e) { continue; }
    const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false);
    const first = source.parseDiagnostics[0];
    files[file] = first === undefined ? null : source.getLineAndCharacterOfPosition(first.start).line + 1;
  }
  process.stdout.write(JSON.stringify({ files }));
}
"""
TIMEOUT_SECONDS = 300
UNREAD = -1


def compiler_syntax_errors(paths: list[str], search: list[Path]) -> dict[str, int | None] | str:
    """For each path, the first line the TypeScript compiler's parser rejects (None: it parses the file
    cleanly, UNREAD: it could not be read); or, as a string, why the compiler could not be asked. `search`: where to look for the
    `typescript` package (node_modules of each directory and of its parents)."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed"
    try:
        done = subprocess.run(
            [node, "-e", _SCRIPT, json.dumps([str(p) for p in search])],
            input=json.dumps(paths),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"node did not answer: {exc}"
    try:
        answer = json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"node failed: {last}"
    if "error" in answer:
        return str(answer["error"])
    return {path: answer["files"].get(path, UNREAD) for path in paths}
