import { writeFile } from 'node:fs/promises';
import { UsageError } from '../../cli/args.js';
import { EXIT } from '../client.js';
import { defineClientCommand } from '../command.js';
import { printJson, table } from '../output.js';
import { printable, terminalSafe } from '../style.js';

interface ImageBill {
  image_id: number; app_hostname: string; revision?: number | null; total_containers: number; active_containers: number; total_runs: number; total_minutes: number;
  vcpu_seconds: number; gib_seconds: number; cpu_seconds_used: number; requests: number; total_cost: number; total_cost_formatted: string; last_activity: string | null;
}
interface Bill { currency: string; plan: string; images: ImageBill[]; total_cost: number; total_cost_formatted: string }
interface Invoice {
  month: string; status: string; plan: string; currency: string; total: number; total_formatted: string;
  lines: { app_hostname: string; resource: string; quantity: number; unit: string; amount: number; amount_formatted: string }[];
}

/**
 * `berth billing`: instance time, requests and cost per app revision (GET /api/billing);
 * `--month YYYY-MM`: that month's invoice, `--csv FILE` (or `-`) for accounting.
 */
export const run = defineClientCommand({
  usage: 'berth billing [--app HOST] [--month YYYY-MM [--csv FILE|-]] [--json]',
  description: `Show what your apps cost: per revision (image) its instance time (runs, minutes, vCPU- and GiB-seconds,
CPU actually used), requests and cost; or, with --month, that month's invoice (line items per app and resource).
Amounts are exact (the control plane computes in micro-units of the currency).`,
  options: [
    { name: 'app', help: 'only this app hostname' },
    { name: 'month', help: 'the invoice of this month (YYYY-MM, UTC)' },
    { name: 'csv', help: 'with --month: write the invoice as CSV to this file (- for stdout)' },
  ],
  async run({ opts, json, client, stdout }) {
    const app = opts.app?.toLowerCase().replace(/\.$/, '');
    if (app !== undefined && !/^[a-z0-9.-]{1,300}$/.test(app)) throw new UsageError(`--app "${opts.app}" is not an app hostname`);
    if (opts.csv !== undefined && opts.month === undefined) throw new UsageError('--csv needs --month');
    if (opts.csv !== undefined && app !== undefined) throw new UsageError('--csv writes the whole invoice: leave out --app');
    if (opts.month !== undefined) {
      if (!/^\d{4}-(0[1-9]|1[0-2])$/.test(opts.month)) throw new UsageError(`--month "${opts.month}" must be YYYY-MM`);
      const path = `/api/billing/invoices/${opts.month}`;
      if (opts.csv !== undefined) {
        const res = await client.stream('GET', path, { query: { format: 'csv' } });
        const text = await client.readAll(res.body, 'GET', path);
        if (opts.csv === '-') stdout.write(terminalSafe(stdout, text)); // an export: exact bytes when piped
        else {
          await writeFile(opts.csv, text);
          process.stderr.write(`wrote ${opts.csv}\n`);
        }
        return EXIT.ok;
      }
      const inv = await client.get<Invoice>(path);
      const lines = inv.lines.filter((l) => app === undefined || l.app_hostname === app);
      if (json) { printJson({ ...inv, lines }); return EXIT.ok; }
      stdout.write(printable(`Invoice ${inv.month} (${inv.status}, plan ${inv.plan}, ${inv.currency})`) + '\n\n');
      if (!lines.length) stdout.write('No usage.\n');
      else {
        stdout.write(table(lines, [
          { header: 'app', value: (l) => l.app_hostname },
          { header: 'resource', value: (l) => l.resource },
          { header: 'quantity', value: (l) => `${l.quantity} ${l.unit}${l.quantity === 1 ? '' : 's'}` },
          { header: 'amount', value: (l) => l.amount_formatted },
        ]));
      }
      const total = app ? lines.reduce((s, l) => s + BigInt(l.amount), 0n) : BigInt(inv.total);
      stdout.write(`\nTotal: ${formatMicros(total)} ${printable(inv.currency)}\n`);
      return EXIT.ok;
    }
    const bill = await client.get<Bill>('/api/billing');
    const images = bill.images.filter((i) => app === undefined || i.app_hostname === app);
    if (json) { printJson({ ...bill, images }); return EXIT.ok; }
    if (!images.length) { stdout.write(app ? `No usage for ${app}.\n` : 'No usage yet.\n'); return EXIT.ok; }
    stdout.write(table(images, [
      { header: 'app', value: (i) => i.app_hostname },
      { header: 'revision', value: (i) => i.revision ?? `(image ${i.image_id}, deleted)` },
      { header: 'runs', value: (i) => `${i.total_runs}${i.active_containers ? ` (${i.active_containers} active)` : ''}` },
      { header: 'minutes', value: (i) => i.total_minutes.toFixed(1) },
      { header: 'vcpu-s', value: (i) => i.vcpu_seconds.toFixed(1) },
      { header: 'gib-s', value: (i) => i.gib_seconds.toFixed(1) },
      { header: 'cpu used', value: (i) => `${i.cpu_seconds_used.toFixed(1)}s` },
      { header: 'requests', value: (i) => i.requests },
      { header: 'cost', value: (i) => i.total_cost_formatted },
    ]));
    const total = app ? images.reduce((s, i) => s + BigInt(i.total_cost), 0n) : BigInt(bill.total_cost);
    stdout.write(`\nTotal: ${formatMicros(total)} ${printable(bill.currency)} (plan ${printable(bill.plan)}; active runs priced up to now)\n`);
    return EXIT.ok;
  },
});

function formatMicros(m: bigint): string {
  return `${m / 1_000_000n}.${(m % 1_000_000n).toString().padStart(6, '0')}`;
}
