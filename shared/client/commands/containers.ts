import { UsageError } from '../../cli/args.js';
import { ClientError, EXIT, type BerthClient } from '../client.js';
import { num, printable } from '../style.js';
import { didYouMean } from '../../cli/suggest.js';
import { defineClientCommand } from '../command.js';
import { printJson, table } from '../output.js';

interface Container {
  id: number; image_id: number; status: string; health: string; desired: string; host_port: number | null;
  status_reason: string | null; started_at: string | null; restart_count: number;
}
interface Image { id: number; app_hostname: string; revision?: number; containers: Container[] }

/** Most containers one `stop`/`start` names (each is one API call). */
const MAX_IDS = 100;

/**
 * `berth containers [--app HOST]`: every instance with its app, revision, status and health.
 * `berth containers stop|start ID…`: POST /api/containers/:id/stop|start, one after the other.
 */
export const run = defineClientCommand({
  usage: 'berth containers [--app HOST] [--json] | berth containers stop|start ID…',
  description: `List your containers (instances): app, revision, status, health, host port and age.
  berth containers stop 12 13    stop instances (drained from the proxies first); they stay stopped:
                                 an app with a floor runs that many fewer, one that scales from zero
                                 is at zero until its next request (docs/containers.md)
  berth containers start 12      start a stopped instance again (it counts against your quota)`,
  positional: { min: 0, max: 1 + MAX_IDS, names: 'stop|start ID…' },
  options: [{ name: 'app', help: 'only the instances of this app hostname' }],
  async run({ opts, args, json, client, stdout }) {
    if (args.length > 0) {
      if (opts.app !== undefined) throw new UsageError('--app lists one app\'s containers; stop and start take container ids');
      return act(client, args, json, stdout);
    }
    const app = opts.app?.toLowerCase().replace(/\.$/, '');
    if (app !== undefined && !/^[a-z0-9.-]{1,300}$/.test(app)) throw new UsageError(`--app "${opts.app}" is not an app hostname`);
    const { images } = await client.get<{ images: Image[] }>('/api/images/with-containers');
    // (a typo in --app is not "no containers": say the app is not there, as berth logs and apps do)
    if (app !== undefined && !images.some((i) => i.app_hostname === app)) {
      throw new ClientError(`you have no app ${app}${didYouMean(app, [...new Set(images.map((i) => i.app_hostname))])}`, EXIT.failed);
    }
    const rows = images
      .filter((i) => app === undefined || i.app_hostname === app)
      .flatMap((i) => i.containers.map((c) => ({ ...c, app_hostname: i.app_hostname, revision: i.revision ?? null })))
      .sort((a, b) => a.id - b.id);
    if (json) { printJson({ containers: rows }); return EXIT.ok; }
    if (!rows.length) { stdout.write(app ? `No containers for ${app}.\n` : 'No containers.\n'); return EXIT.ok; }
    stdout.write(table(rows, [
      { header: 'id', value: (c) => c.id },
      { header: 'app', value: (c) => c.app_hostname },
      { header: 'revision', value: (c) => (c.revision ? `${c.revision} (image ${c.image_id})` : `image ${c.image_id}`) },
      { header: 'status', value: (c) => (c.desired !== 'running' && c.status === 'running' ? `${c.status} → ${c.desired}` : c.status) },
      { header: 'health', value: (c) => c.health },
      { header: 'port', value: (c) => c.host_port },
      { header: 'up', value: (c) => (c.started_at && c.status === 'running' ? age(c.started_at) : null) },
      { header: 'reason', value: (c) => c.status_reason },
    ]));
    return EXIT.ok;
  },
});

async function act(client: BerthClient, args: string[], json: boolean, out: NodeJS.WriteStream): Promise<number> {
  const [verb, ...rest] = args;
  if (verb !== 'stop' && verb !== 'start') throw new UsageError(`unknown action "${verb.slice(0, 40)}": berth containers stop|start ID…`);
  if (rest.length === 0) throw new UsageError(`berth containers ${verb} needs the id of a container (berth containers lists them)`);
  const ids = rest.map((a) => {
    if (!/^[1-9]\d{0,15}$/.test(a) || !Number.isSafeInteger(Number(a))) throw new UsageError(`"${a.slice(0, 40)}" is not a container id (berth containers lists them)`);
    return Number(a);
  });
  const done: Container[] = [];
  for (const id of ids) {
    const c = await client.post<Container>(`/api/containers/${id}/${verb}`);
    done.push(c);
    if (!json) out.write(`container ${num(c.id)}: ${printable(c.status)}${c.status_reason ? ` (${printable(c.status_reason)})` : ''}\n`);
  }
  if (json) printJson({ containers: done });
  return EXIT.ok;
}

function age(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}
