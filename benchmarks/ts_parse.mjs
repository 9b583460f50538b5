// Baseline: a bare parse of every .ts file under a root with the TypeScript compiler's parser.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';

function* walk(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(path);
    else if (entry.name.endsWith('.ts')) yield path;
  }
}

let files = 0;
let statements = 0;
for (const path of walk(process.argv[2])) {
  const source = ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.Latest, true);
  statements += source.statements.length;
  files += 1;
}
console.log(JSON.stringify({ files, statements }));
