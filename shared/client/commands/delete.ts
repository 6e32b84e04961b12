import { createInterface } from 'node:readline/promises';
import { UsageError } from '../../cli/args.js';
import { EXIT } from '../client.js';
import { appHostArg, booleanOption, defineClientCommand } from '../command.js';
import { printJson } from '../output.js';
import { printable } from '../style.js';
import type { App } from './apps.js';

/**
 * `berth delete HOST`: delete an app (DELETE /api/apps/:host), like `gcloud run services delete`.
 * It stops serving at once; its instances are drained and removed, then every revision and image.
 * Asks first on a terminal; elsewhere (scripts, CI) it needs --yes.
 */
export const run = defineClientCommand({
  usage: 'berth delete HOST [--yes] [--json]',
  description: `Delete an app: it stops serving at once, its instances are drained from the proxies and removed,
then every revision and its image. The hostname is free again afterwards.
  berth delete shop.example.com          asks first
  berth delete shop.example.com --yes    no question (needed when stdin is not a terminal)`,
  positional: { min: 1, max: 1, names: 'HOST' },
  options: [{ name: 'yes', boolean: true, help: 'do not ask for confirmation' }],
  async run({ opts, args, json, client, stdout, stderr }) {
    const host = appHostArg(args[0]);
    const path = `/api/apps/${encodeURIComponent(host)}`;
    const app = await client.get<App>(path);
    const revisions = app.revisions.map((r) => r.revision).sort((a, b) => a - b);
    // (numbers as numbers: a hostile server's string would otherwise be joined into the prompt)
    const instances = app.revisions.reduce((n, r) => n + (Number.isSafeInteger(r.instances) ? r.instances : 0), 0);
    const what = `${printable(app.app_hostname)} (${revisions.length} revision${revisions.length === 1 ? '' : 's'}, ${instances} instance${instances === 1 ? '' : 's'})`;
    if (!booleanOption(opts.yes, 'yes')) {
      if (!process.stdin.isTTY) throw new UsageError(`not deleting ${what} without --yes (stdin is not a terminal to ask on)`);
      const rl = createInterface({ input: process.stdin, output: stderr });
      const answer = await rl.question(`Delete ${what}? Its URL stops answering now. [y/N] `).finally(() => rl.close());
      if (!/^y(es)?$/i.test(answer.trim())) {
        stderr.write('Nothing deleted.\n');
        return EXIT.failed;
      }
    }
    const started = Date.now();
    await client.delete(path);
    if (json) printJson({ deleted: app.app_hostname, revisions, instances });
    else stdout.write(`Deleted ${what} in ${((Date.now() - started) / 1000).toFixed(1)}s.\n`);
    return EXIT.ok;
  },
});
