import { setTimeout as wait } from 'node:timers/promises';
import { ClientError, EXIT } from '../client.js';
import { appHostArg, booleanOption, defineClientCommand, intOption } from '../command.js';
import { cell, jsonText } from '../output.js';
import { num, paint } from '../style.js';

interface EventRecord {
  id: number;
  type: string;
  app_hostname: string | null;
  image_id: number | null;
  container_id: number | null;
  payload: Record<string, unknown>;
  created_at: string;
}

/**
 * `--follow` long-polls (`wait`: the answer comes as soon as an event is recorded, or after this
 * many seconds with none); a control plane from before long polls refuses `wait`, and is asked
 * every FOLLOW_EVERY_MS instead.
 */
const FOLLOW_WAIT_S = 25;
const FOLLOW_EVERY_MS = 2000;

/**
 * `berth events [HOST]`: what happened to your apps (builds, revisions, instances started,
 * stopped and replaced, autoscaler decisions, traffic and access changes, deletions), from
 * GET /api/events, oldest first: the newest N, then with --follow each new one as it is recorded.
 * --json prints one JSON object per event (NDJSON).
 */
export const run = defineClientCommand({
  usage: 'berth events [HOST] [--tail N] [--follow] [--json]',
  description: `Print what happened to your apps, oldest first: builds, revisions, instances started, stopped and
replaced, autoscaler decisions, traffic and access changes, deletions.
  berth events                            your last 20 events
  berth events shop.example.com --follow  one app's, then new ones as they happen (Ctrl-C to stop)`,
  positional: { min: 0, max: 1, names: 'HOST (an app hostname)' },
  options: [
    { name: 'tail', help: 'how many of the newest events to print first (default 20, at most 1000)' },
    { name: 'follow', boolean: true, help: 'keep printing new events (Ctrl-C to stop)' },
  ],
  async run({ opts, args, json, client, stdout, signal }) {
    const host = args[0] === undefined ? undefined : appHostArg(args[0]);
    const tail = intOption(opts.tail, 'tail', 1, 1000) ?? 20;
    const follow = booleanOption(opts.follow, 'follow');
    const print = (e: EventRecord) => {
      if (json) {
        stdout.write(jsonText(e) + '\n');
        return;
      }
      // (every field from the server on one line: a newline in one must not forge another event)
      const what = [typeof e.app_hostname === 'string' ? cell(e.app_hostname) : '', summary(e)].filter((x) => x !== '').join('  ');
      stdout.write(`${paint(stdout, 'dim', cell(String(e.created_at)))}  ${paint(stdout, 'cyan', cell(String(e.type)).padEnd(24))} ${what}\n`);
    };
    const page = async (query: Record<string, string | number | undefined>) => {
      const r = await client.get<{ events: EventRecord[]; next_after: number }>('/api/events', { query: { app: host, ...query }, signal });
      if (!Array.isArray(r?.events) || !Number.isSafeInteger(r.next_after) || r.next_after < 0 ||
        !r.events.every((e) => typeof e === 'object' && e !== null && typeof e.type === 'string')) {
        throw new ClientError(`the API at ${client.api} answered GET /api/events with something that is not a page of events`);
      }
      return r;
    };
    try {
      let r = await page({ tail });
      r.events.forEach(print);
      if (!follow) return EXIT.ok;
      let after = r.next_after;
      let longPoll = true;
      // Paced so that no server makes this a hot loop: an answer with nothing new that came back
      // at once (the control plane holds enough of this user's polls already), and every 20th
      // answer in a row that came back within a second, are followed by a pause; a full page
      // (a burst: more are waiting) is followed by the next at once.
      let pause = false;
      let quick = 0;
      for (;;) {
        if (pause) await wait(FOLLOW_EVERY_MS, undefined, { signal });
        const asked = Date.now();
        try {
          r = await page({ after, limit: 1000, ...(longPoll ? { wait: FOLLOW_WAIT_S } : {}) });
        } catch (e) {
          // (a control plane from before long polls: its query schema has no `wait`)
          if (!longPoll || !(e instanceof ClientError) || e.api?.status !== 400 || signal.aborted) throw e;
          longPoll = false;
          pause = true;
          continue;
        }
        r.events.forEach(print);
        const moved = r.next_after !== after;
        after = r.next_after;
        const more = moved && r.events.length >= 1000;
        const fast = Date.now() - asked < 1000;
        quick = fast ? quick + 1 : 0;
        if (quick >= 20) {
          quick = 0;
          pause = true;
        } else if (longPoll) pause = !more && !moved && fast;
        else pause = !more;
      }
    } catch (e) {
      if (signal.aborted) return EXIT.ok; // Ctrl-C while following is how one stops
      throw e;
    }
  },
});

/** The payload as `key=value …` (strings and numbers; objects as compact JSON), on one printable line. */
function summary(e: EventRecord): string {
  const parts: string[] = [];
  if (e.image_id !== null && e.image_id !== undefined) parts.push(`image=${num(e.image_id)}`);
  if (e.container_id !== null && e.container_id !== undefined) parts.push(`container=${num(e.container_id)}`);
  const payload = e.payload !== null && typeof e.payload === 'object' ? e.payload : {};
  for (const [k, v] of Object.entries(payload)) {
    if (v === null || v === undefined) continue;
    const text = typeof v === 'string' ? (/[\s"=]/.test(v) ? JSON.stringify(v) : v) : typeof v === 'object' ? JSON.stringify(v) : String(v);
    parts.push(`${k}=${text.length > 200 ? text.slice(0, 199) + '…' : text}`);
  }
  return cell(parts.join(' '));
}
