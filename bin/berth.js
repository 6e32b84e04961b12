#!/bin/sh
':' //; exec node -- "$0" "$@"
// berth CLI entry point. The TypeScript sources compile to dist/ (npm install runs `prepare`).
// The two lines above are sh and JavaScript at once: sh runs `node -- THIS-FILE ARGS` (the `:`
// line), Node reads a string and a comment. The `--`: Node 20 reads `--env-file` anywhere on its
// command line, the script's arguments included, and exits with code 9 when the file is missing;
// `berth deploy --env-file F` is berth's flag. (`env -S node --` would do it in one line, but
// BusyBox's env, Alpine's, has no -S.)
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const main = join(root, 'dist', 'shared', 'cli', 'main.js');
if (!existsSync(main)) {
  process.stderr.write('berth: compiled sources not found (dist/). Run `npm install` or `npm run build` first.\n');
  process.exit(1);
}
const { main: run } = await import(main);
await run(process.argv.slice(2));
