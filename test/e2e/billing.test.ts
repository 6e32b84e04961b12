/**
 * Usage records and billing with real Docker: one record per container run (start → Active,
 * stop → Completed with its duration, start again → a new record, `docker kill` → closed as a
 * crash and the replacement gets its own), Docker stats tell an idle container from a busy one,
 * money sums exactly, invoices total their lines and parse as CSV, another user sees 404.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { describeWithDocker, docker } from '../helpers/docker.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { BIN, removeClusterContainers, sleep, waitFor } from './support.js';

const tag = randomBytes(3).toString('hex');
const IDLE_HOST = `idle-${tag}.example.com`;
const BUSY_HOST = `busy-${tag}.example.com`;
let t: TestControlPlane;
let alice: Api;
let bob: Api;
let clusterId = '';
const dockerImages: string[] = [];
let idleImage = 0;
let busyImage = 0;

const app = (busy: boolean) => [
  {
    name: 'Dockerfile',
    content: `FROM berth-test/busybox:1\nCOPY www /www\nCMD ["sh", "-c", "${busy ? 'while :; do :; done & ' : ''}exec httpd -f -p \${PORT:-8080} -h /www"]\n`,
  },
  { name: 'www/', type: 'directory' as const },
  { name: 'www/index.html', content: 'ok\n' },
];

const billing = async (id: number, api = alice) => (await api.get(`/api/billing/images/${id}`)).body;
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

await describeWithDocker('billing: usage records from the container lifecycle, priced in micro-units', () => {
  beforeAll(async () => {
    process.env.BERTH_USAGE_SAMPLE_MS = '300';
    t = await startTestControlPlane({ seedDefaultUser: false, health: { intervalMs: 100 }, autoscale: { enabled: false }, reconcileIntervalMs: 500 });
    clusterId = t.cp.app.platform.clusterId;
    alice = await new Api(t.cp.url).signup(`alice-bill-${tag}@example.com`);
    bob = await new Api(t.cp.url).signup(`bob-bill-${tag}@example.com`);
    // no traffic: nothing starts on its own (a revision that scales from zero deployed with traffic is
    // started once to prove it can serve); the containers are made by hand below
    const ups = await Promise.all([
      alice.upload({ name: 'idle', app_hostname: IDLE_HOST, min_instances: 0, no_traffic: 'true', max_instances: 2, cpu_limit: '0.5', memory_limit: '64m', health_path: '/' }, await makeTar(app(false))),
      alice.upload({ name: 'busy', app_hostname: BUSY_HOST, min_instances: 0, no_traffic: 'true', max_instances: 2, cpu_limit: '0.5', memory_limit: '64m', health_path: '/' }, await makeTar(app(true))),
    ]);
    for (const u of ups) { expect(u.status, u.text).toBe(201); dockerImages.push(u.body.docker_image); }
    [idleImage, busyImage] = ups.map((u) => u.body.id);
    for (const id of [idleImage, busyImage]) expect((await alice.waitForBuild(id, 120_000)).status).toBe('ready');
  }, 180_000);

  afterAll(async () => {
    delete process.env.BERTH_USAGE_SAMPLE_MS;
    await t?.close();
    if (clusterId) await removeClusterContainers(clusterId);
    for (const i of dockerImages) await docker.getImage(i).remove({ force: true }).catch(() => {});
  });

  it('a run opens an Active record with what it was given; stats tell idle from busy; stop completes it; a start is a new record', async () => {
    const [ci, cb] = await Promise.all([idleImage, busyImage].map(async (id) => {
      const r = await alice.post(`/api/containers/${id}`, { count: 1 });
      expect(r.status, r.text).toBe(201);
      return r.body.containers[0];
    }));
    let idle = await billing(idleImage);
    expect(idle.records).toHaveLength(1);
    expect(idle.records[0]).toMatchObject({ container_id: ci.id, status: 'Active', end_time: null, vcpu: 0.5, memory_bytes: 64 * 1024 * 1024 });
    expect(idle.active_containers).toBe(1);
    await sleep(3000);
    const busy = await waitFor('busy CPU sampled', async () => { const b = await billing(busyImage); return b.records[0]?.cpu_seconds_used > 0.8 && b; }, 15_000, 300);
    idle = await billing(idleImage);
    expect(idle.records[0].samples).toBeGreaterThan(0);
    // busy: about 0.5 CPU × the seconds it ran; idle: httpd waiting
    expect(idle.records[0].cpu_seconds_used).toBeLessThan(0.3);
    expect(busy.records[0].cpu_seconds_used).toBeGreaterThan(idle.records[0].cpu_seconds_used * 4);
    expect(idle.records[0].peak_memory_bytes).toBeGreaterThan(0);
    // an active record is priced up to now
    expect(idle.records[0].cost).toBeGreaterThan(0);
    expect(idle.records[0].vcpu_seconds).toBeCloseTo(idle.records[0].billed_seconds * 0.5, 2);

    expect((await alice.post(`/api/containers/${ci.id}/stop`)).status).toBe(200);
    idle = await billing(idleImage);
    expect(idle.records[0]).toMatchObject({ status: 'Completed', end_reason: 'stopped (api)' });
    expect(idle.records[0].duration_seconds).toBeGreaterThan(2.5);
    const frozen = idle.records[0].cost;
    await sleep(300);
    expect((await billing(idleImage)).records[0].cost).toBe(frozen);
    expect((await alice.post(`/api/containers/${ci.id}/start`)).status).toBe(200);
    idle = await billing(idleImage);
    expect(idle.records.map((r: { status: string }) => r.status)).toEqual(['Completed', 'Active']);
    expect(idle.records[1].container_id).toBe(ci.id);
    expect(idle.total_containers).toBe(1);
    expect(idle.total_runs).toBe(2);

    // limits changed while stopped: the next start runs with them and is billed for them (the
    // stopped container, made with the old ones, is made afresh — not billed small while running big)
    expect((await alice.post(`/api/containers/${ci.id}/stop`)).status).toBe(200);
    expect((await alice.req('PATCH', `/api/images/${idleImage}`, { json: { cpu_limit: '0.25', memory_limit: '32m' } })).status).toBe(200);
    const started = await alice.post(`/api/containers/${ci.id}/start`);
    expect(started.status, started.text).toBe(200);
    const made = await docker.getContainer(started.body.docker_id).inspect();
    expect([made.HostConfig.NanoCpus, made.HostConfig.Memory]).toEqual([0.25e9, 32 * 1024 * 1024]);
    idle = await billing(idleImage);
    expect(idle.records).toHaveLength(3);
    expect(idle.records[2]).toMatchObject({ status: 'Active', vcpu: 0.25, memory_bytes: 32 * 1024 * 1024 });

    // the sampler's safety net (a running container with no open record, e.g. a missed hook)
    // bills what Docker says the container has, not the image's limits changed since
    expect((await alice.req('PATCH', `/api/images/${idleImage}`, { json: { cpu_limit: '1', memory_limit: '128m' } })).status).toBe(200);
    await t.cp.db.query(`DELETE FROM usage_records WHERE container_id = $1 AND end_time IS NULL`, [ci.id]);
    idle = await waitFor('the sampler opened a record for the running container', async () => {
      const b = await billing(idleImage);
      return b.records.length === 3 && b.records[2].status === 'Active' && b;
    }, 10_000, 100);
    expect(idle.records[2]).toMatchObject({ container_id: ci.id, vcpu: 0.25, memory_bytes: 32 * 1024 * 1024 });

    // docker kill: the reconcile loop sees the crash, closes the record, and the replacement opens its own
    await docker.getContainer(cb.docker_id).kill();
    const crashed = await waitFor('the crash closed the record and a new run opened', async () => {
      const b = await billing(busyImage);
      return b.records.length >= 2 && b.records[0].status === 'Completed' && b.records[1].status === 'Active' && b;
    }, 30_000, 300);
    expect(crashed.records[0].end_reason).toMatch(/^crashed/);
    expect(crashed.records[0].cpu_seconds_used).toBeGreaterThan(0.8);
  }, 90_000);

  it('money sums exactly: records → image → account; an invoice totals its lines and its CSV says the same', async () => {
    const all = (await alice.get('/api/billing')).body;
    expect(all.currency).toBe('USD');
    expect(all.plan).toBe('cloud_run');
    for (const i of all.images) {
      const one = await billing(i.image_id);
      expect(one.total_cost).toBe(one.instance_cost + one.requests_cost);
      expect(one.instance_cost).toBeGreaterThanOrEqual(sum(one.records.map((r: { cost: number }) => r.cost)));
      for (const r of one.records) expect(Number.isInteger(r.cost)).toBe(true);
    }
    const again = (await alice.get('/api/billing')).body;
    expect(again.total_cost).toBe(sum(again.images.map((i: { total_cost: number }) => i.total_cost)));
    expect(again.images.map((i: { app_hostname: string }) => i.app_hostname).sort()).toEqual([BUSY_HOST, IDLE_HOST].sort());

    // stop everything: then the numbers no longer move and records and invoice agree to the micro-unit
    for (const c of (await alice.get('/api/containers')).body.containers) if (c.desired === 'running') await alice.post(`/api/containers/${c.id}/stop`);
    const month = new Date().toISOString().slice(0, 7);
    const b = (await alice.get('/api/billing')).body;
    const inv = (await alice.get(`/api/billing/invoices/${month}`)).body;
    expect(inv).toMatchObject({ month, currency: 'USD', status: 'open', plan: 'cloud_run' });
    expect(inv.lines.length).toBe(6); // cpu, memory, requests × 2 apps
    expect(inv.total).toBe(sum(inv.lines.map((l: { amount: number }) => l.amount)));
    expect(inv.total).toBe(b.total_cost);
    for (const l of inv.lines) expect(Number.isInteger(l.amount)).toBe(true);

    const csv = await alice.req('GET', `/api/billing/invoices/${month}?format=csv`);
    expect(csv.status).toBe(200);
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    const rows = csv.text.trim().split('\r\n').map((l) => l.split(','));
    expect(rows[0]).toEqual(['month', 'app_hostname', 'resource', 'quantity', 'unit', 'rate_micros', 'rate_per', 'amount_micros', 'amount', 'currency']);
    const body = rows.slice(1, -1);
    expect(body).toHaveLength(inv.lines.length);
    expect(sum(body.map((r) => Number(r[7])))).toBe(inv.total);
    expect(rows[rows.length - 1][2]).toBe('total');
    expect(Number(rows[rows.length - 1][7])).toBe(inv.total);
  }, 60_000);

  it('berth billing prints the same numbers (table, --json, --month, --csv -)', async () => {
    const env = { ...process.env, BERTH_API: t.cp.url, BERTH_TOKEN: alice.token!, HOME: '/nonexistent-home', NO_COLOR: '1' };
    const berth = (...a: string[]) => promisify(execFile)(process.execPath, [BIN, 'billing', ...a], { env }).then((r) => r.stdout);
    const api = (await alice.get('/api/billing')).body;
    const j = JSON.parse(await berth('--json'));
    expect(j.total_cost).toBe(api.total_cost);
    const text = await berth();
    expect(text).toContain(IDLE_HOST);
    // each line names its app's revision, as every other command does (the image id is in --json)
    expect(text.split('\n')[0]).toMatch(/^app\s+revision\s+runs/i);
    const idleLine = text.split('\n').find((l) => l.startsWith(IDLE_HOST));
    const idle = api.images.find((i: { app_hostname: string }) => i.app_hostname === IDLE_HOST);
    expect(idle.revision).toEqual(expect.any(Number));
    expect(idleLine).toMatch(new RegExp(`^${IDLE_HOST.replace(/\./g, '\\.')}\\s+${idle.revision}\\s`));
    expect(text).toContain(`Total: ${api.total_cost_formatted} USD`);
    const month = new Date().toISOString().slice(0, 7);
    expect(await berth('--month', month)).toContain(`Total: ${(await alice.get(`/api/billing/invoices/${month}`)).body.total_formatted} USD`);
    const csv = await berth('--month', month, '--csv', '-');
    expect(csv.split('\r\n')[0]).toMatch(/^month,app_hostname,resource/);
    await expect(berth('--month', '2026-13')).rejects.toThrow(/YYYY-MM/);
  });

  it('isolation and hostile input: another user\'s image is 404; months not YYYY-MM are 400', async () => {
    expect((await bob.get(`/api/billing/images/${idleImage}`)).status).toBe(404);
    expect((await bob.get('/api/billing/images/999999')).status).toBe(404);
    const theirs = (await bob.get('/api/billing')).body;
    expect(theirs.images).toEqual([]);
    expect(theirs.total_cost).toBe(0);
    const month = new Date().toISOString().slice(0, 7);
    expect((await bob.get(`/api/billing/invoices/${month}`)).body.lines).toEqual([]);
    for (const m of ['2026-13', '2026-1', 'abc', '2026-11-01', '0000-00', '2026-00']) {
      const r = await alice.get(`/api/billing/invoices/${m}`);
      expect(r.status, m).toBe(400);
      expect(r.body.error.message, m).toBeTruthy();
    }
    expect((await alice.get('/api/billing/invoices/2999-01')).status).toBe(400);
    expect((await alice.get(`/api/billing/invoices/${month}?format=xml`)).status).toBe(400);
    expect((await alice.get('/api/billing/images/abc')).status).toBe(400);
    expect((await alice.get('/api/billing?since=yesterday')).status).toBe(400);
    expect((await alice.get(`/api/billing/images/${idleImage}?x=1`)).status).toBe(400);
    expect((await new Api(t.cp.url).get('/api/billing')).status).toBe(401);
  });
});
