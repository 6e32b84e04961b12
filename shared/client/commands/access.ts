import { UsageError } from '../../cli/args.js';
import { EXIT } from '../client.js';
import { appHostArg, booleanOption, defineClientCommand } from '../command.js';
import { printJson, table } from '../output.js';
import { num, printable } from '../style.js';

interface Invoker { id: number; name: string; created_at: string }

/**
 * `berth access HOST`: who may call an app (Cloud Run's `--[no-]allow-unauthenticated` and its
 * invokers). Private apps answer only requests with one of their invoker tokens
 * (`X-Berth-Authorization: Bearer T` or `Authorization: Bearer T`); the proxies refuse the rest.
 */
export const run = defineClientCommand({
  usage: 'berth access HOST [--private | --public] [--add-invoker NAME] [--revoke-invoker ID] [--json]',
  description: `Show or change who may call an app.
  berth access shop.example.com                        public or private, and its invoker tokens
  berth access shop.example.com --private              only requests with an invoker token reach it
  berth access shop.example.com --add-invoker ci       make a token (printed once: keep it)
  berth access shop.example.com --revoke-invoker 3     the proxies refuse it from the next route push
  berth access shop.example.com --public               anyone again
Callers send X-Berth-Authorization: Bearer <token> (or Authorization: Bearer <token>, which then does not
reach the app).`,
  positional: { min: 1, max: 1, names: 'HOST' },
  options: [
    { name: 'private', boolean: true, help: 'only requests with an invoker token reach the app' },
    { name: 'public', boolean: true, help: 'anyone may call the app (the default)' },
    { name: 'add-invoker', help: 'NAME: make an invoker token (letters, digits, space . _ -)' },
    { name: 'revoke-invoker', help: 'ID: revoke an invoker token' },
  ],
  async run({ opts, args, json, client, stdout }) {
    const host = appHostArg(args[0]);
    const priv = booleanOption(opts.private, 'private');
    const pub = booleanOption(opts.public, 'public');
    if (priv && pub) throw new UsageError('--private and --public contradict each other');
    const revoke = opts['revoke-invoker'];
    if (revoke !== undefined && !/^[1-9][0-9]{0,15}$/.test(revoke)) throw new UsageError(`--revoke-invoker takes an invoker id (a number), not "${revoke.slice(0, 40)}"`);
    const base = `/api/apps/${encodeURIComponent(host)}`;
    if (priv || pub) await client.patch(base, { private: priv });
    let made: (Invoker & { token: string }) | null = null;
    if (opts['add-invoker'] !== undefined) made = await client.post<Invoker & { token: string }>(`${base}/invokers`, { name: opts['add-invoker'] });
    if (revoke !== undefined) await client.delete(`${base}/invokers/${revoke}`);
    const app = await client.get<{ app_hostname: string; private?: boolean }>(base);
    const { invokers } = await client.get<{ invokers: Invoker[] }>(`${base}/invokers`);
    if (json) {
      printJson({ app_hostname: app.app_hostname, private: app.private === true, invokers, ...(made ? { created: made } : {}) });
      return EXIT.ok;
    }
    stdout.write(`${printable(app.app_hostname)} is ${app.private ? 'private: only requests with an invoker token reach it' : 'public: anyone may call it'}\n`);
    if (made) stdout.write(`New invoker token "${printable(made.name)}" (id ${num(made.id)}), shown only now:\n  ${printable(made.token)}\n`);
    if (invokers.length) stdout.write(table(invokers, [
      { header: 'id', value: (i) => i.id },
      { header: 'invoker', value: (i) => i.name },
      { header: 'created', value: (i) => i.created_at },
    ]));
    else if (app.private) stdout.write('No invoker tokens: nobody can call it. Make one with --add-invoker NAME.\n');
    return EXIT.ok;
  },
});
