import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonText, Status, table } from '../../shared/client/output.js';
import { Api } from '../helpers/api.js';
import { insertReadyImage, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { BIN, built } from '../e2e/support.js';

/**
 * Text the API hands the CLI (reasons, names, error messages) never reaches the reader's terminal
 * with its escape sequences, in tables, status lines and error lines, on a terminal or piped (a
 * file or a CI log is read on a terminal later). Runs the real `berth` against a real control plane.
 */

// OSC 52 (write the clipboard), a CSI that clears the screen, a C1 CSI, a BEL
const EVIL = 'copy\x1b]52;c;cm0gLXJmIH4K\x07 clear\x1b[2J\x1b[H c1\x9b31m bell\x07';
const RAW = /\x1b|\x07|\x9b/;

function stream(isTTY: boolean): NodeJS.WriteStream & { text: string } {
  const s = { isTTY, text: '', write(chunk: string) { s.text += chunk; return true; } };
  return s as unknown as NodeJS.WriteStream & { text: string };
}

interface Run { code: number | null; out: string; err: string }

/** `berth …` piped (not a TTY), with a token and no config dir of the user's. */
function berth(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, BERTH_CONFIG_DIR: '/nonexistent/berth-test', NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

/** A hostile API on a free loopback port answering every request with `answer`; closed after `fn`. */
async function withApi(answer: (req: IncomingMessage, res: ServerResponse) => void, fn: (api: string) => Promise<void>): Promise<void> {
  const server = createServer(answer);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    await fn(`http://127.0.0.1:${(server.address() as { port: number }).port}`);
  } finally {
    server.close();
  }
}

describe('the table and status helpers', () => {
  it('a table cell has its control characters defused and stays on one line', () => {
    const text = table([{ id: 1, reason: `${EVIL}\nsecond line` }], [
      { header: 'id', value: (r) => r.id },
      { header: 'reason', value: (r) => r.reason },
    ]);
    expect(text).not.toMatch(RAW);
    expect(text.split('\n')).toEqual(['ID  REASON', `1   copy\ufffd]52;c;cm0gLXJmIH4K\ufffd clear\ufffd[2J\ufffd[H c1\ufffd31m bell\ufffd second line`, '']);
  });

  it('a status line has them defused, piped and on a terminal (where the spinner keeps its own codes)', () => {
    for (const tty of [false, true]) {
      const out = stream(tty);
      const s = new Status(out);
      s.set(`Starting instances: 0/1 healthy (1 failing: ${EVIL})`);
      s.done('done');
      expect(out.text).toContain('1 failing: copy\ufffd]52');
      expect(out.text.replace(/\r\x1b\[2K/g, '')).not.toMatch(RAW);
    }
  });
});

describe('JSON output (--json, berth logs --json)', () => {
  it('escapes every control character, C1 and DEL too, and parses back to the exact text', () => {
    const text = jsonText({ reason: `${EVIL}\x7f` }, 2);
    expect(text).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
    expect(text).toContain('c1\\u009b31m');
    expect(JSON.parse(text)).toEqual({ reason: `${EVIL}\x7f` });
    expect(jsonText(undefined)).toBe('null');
  });
});

describe('an API error message, piped', () => {
  it.skipIf(!built())('is shown with its escape sequences defused, also in --json', async () => {
    await withApi((_req, res) => {
      res.writeHead(409, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: `conflict${EVIL}`, message: `nope ${EVIL}` } }));
    }, async (api) => {
      const r = await berth(['apps', '--api', api], { BERTH_TOKEN: 'berth_x' });
      expect(r.code).toBe(1);
      expect(r.err).toContain('berth apps: nope copy\ufffd]52;c;');
      expect(r.err).not.toMatch(RAW);
      const j = await berth(['apps', '--api', api, '--json'], { BERTH_TOKEN: 'berth_x' });
      expect(j.code).toBe(1);
      expect(j.err + j.out).not.toMatch(RAW);
      expect((JSON.parse(j.out) as { error: { message: string } }).error.message).toContain('nope copy\ufffd]52');
    });
  });
});

describe('numbers that a hostile server sends as strings', () => {
  it.skipIf(!built())('berth events: a page whose events are not objects is a clear error, not a crash', async () => {
    await withApi((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ events: [null, 1], next_after: 2 }));
    }, async (api) => {
      const r = await berth(['events', '--api', api], { BERTH_TOKEN: 'berth_x' });
      expect(r.code).toBe(1);
      expect(r.err).toContain('answered GET /api/events with something that is not a page of events');
      expect(r.err).not.toMatch(/TypeError|at .*\.js:\d+/);
    });
  });

  it.skipIf(!built())('berth logs: a container id of escape sequences is defused before it labels each line', async () => {
    await withApi((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(`event: log\ndata: ${JSON.stringify({ container_id: EVIL, image_id: 1, stream: 'stdout', time: null, line: 'hello' })}\n\nevent: end\ndata: {}\n\n`);
    }, async (api) => {
      const r = await berth(['logs', 'x.localhost', '--api', api], { BERTH_TOKEN: 'berth_x' });
      expect(r.out).toContain('[copy\ufffd]52;c;');
      expect(r.out).toContain('hello');
      expect(r.out + r.err).not.toMatch(RAW);
    });
  });
});

describe('berth load --remote against a hostile control plane', () => {
  const metrics = (over: Record<string, unknown> = {}) => ({
    total_requests: 10, successful_requests: 9, failed_requests: 1, error_rate: 10, requests_per_second: 10, target_rps: 10,
    avg_latency_ms: 1, min_latency_ms: 1, max_latency_ms: 2, p50_latency_ms: 1, p90_latency_ms: 1, p95_latency_ms: 2, p99_latency_ms: 2, p999_latency_ms: 2,
    status_code_distribution: { [`200${EVIL}`]: 9 }, errors: { [`reset${EVIL}`]: 1 }, late_requests: 0, dropped_requests: 0,
    start_time: 'x', end_time: 'y', duration_seconds: 1, app_hostnames: ['evil.localhost'], series: [], scheduled_requests: 10,
    latency_distribution: [], connections_opened: 1, connections_max: 1, bytes_received: 0, late_threshold_ms: 10,
    send_delay_p50_ms: null, send_delay_p99_ms: null, send_delay_max_ms: null, stopped: false, ...over,
  });
  const serve = async (m: Record<string, unknown>) => {
    const server = createServer((req, res) => {
      if (req.method === 'POST' && req.url === '/api/workloads') { res.writeHead(201, { 'content-type': 'application/json' }); res.end('{"id":7}'); return; }
      if (req.url === '/api/workloads/7/live') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const ok = { elapsed_s: 1, duration_s: 1, point: { target_rps: 10, achieved_rps: 10 }, total_requests: 10, errors: 0, late: 0, dropped: 0, connections: 1, p50_ms: 1, p99_ms: 2 };
        // (progress lines berth cannot read: wrong types, not JSON, null; each is skipped)
        res.end(`event: progress\ndata: ${JSON.stringify({ ...ok, connections: EVIL })}\n\nevent: progress\ndata: not json\n\nevent: progress\ndata: null\n\nevent: progress\ndata: ${JSON.stringify(ok)}\n\nevent: end\ndata: {}\n\n`);
        return;
      }
      if (req.url === '/api/workloads/7') { res.writeHead(200, { 'content-type': 'application/json' }); res.end(JSON.stringify({ id: 7, status: 'completed', status_reason: null, config: {}, metrics: m })); return; }
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { server, api: `http://127.0.0.1:${(server.address() as { port: number }).port}` };
  };

  it.skipIf(!built())('its texts are defused; numbers of the wrong type are a clear error, not a crash', async () => {
    const a = await serve(metrics());
    try {
      const r = await berth(['load', '--remote', '--app', 'evil.localhost', '--rps', '10', '--duration', '1s'], { BERTH_API: a.api, BERTH_TOKEN: 'berth_x' });
      expect(r.code, r.err).toBe(0);
      expect(r.out).toContain('200copy\ufffd]52');
      expect(r.out + r.err).not.toMatch(RAW);
    } finally {
      a.server.close();
    }
    const b = await serve(metrics({ error_rate: 'lots', late_threshold_ms: EVIL }));
    try {
      const r = await berth(['load', '--remote', '--app', 'evil.localhost', '--rps', '10', '--duration', '1s'], { BERTH_API: b.api, BERTH_TOKEN: 'berth_x' });
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/sent workload metrics berth cannot read \(error_rate\)/);
      expect(r.err).not.toMatch(/TypeError|    at /);
    } finally {
      b.server.close();
    }
  });
});

describe.skipIf(!built())('tables and lines from a real control plane', () => {
  let t: TestControlPlane;
  let env: Record<string, string>;
  let workloadId: number;

  beforeAll(async () => {
    t = await startTestControlPlane({ autoscale: { enabled: false } });
    const alice = await new Api(t.cp.url).signup('server-text@example.com');
    const userId = Number((await alice.get('/api/auth/me')).body.user.id);
    const imageId = await insertReadyImage(t.cp, userId, 'evil.localhost');
    // a container that failed with a reason quoting hostile output (never started in Docker)
    await t.cp.db.query(
      `INSERT INTO containers (user_id, image_id, status, health, desired, status_reason) VALUES ($1, $2, 'failed', 'unhealthy', 'stopped', $3)`,
      [userId, imageId, `exited: ${EVIL}`]);
    const { rows: [w] } = await t.cp.db.query<{ id: string }>(
      `INSERT INTO workloads (user_id, status, status_reason, config, finished_at) VALUES ($1, 'failed', $2, $3, now()) RETURNING id`,
      [userId, `gave up: ${EVIL}`, JSON.stringify({ app_hostnames: ['evil.localhost'], pattern: 'constant', rps: 10, duration_seconds: 5, path: `/${EVIL}`, method: 'GET' })]);
    workloadId = Number(w.id);
    env = { BERTH_API: t.cp.url, BERTH_TOKEN: alice.token! };
  }, 120_000);

  afterAll(async () => {
    await t?.close();
  });

  it('berth containers: the status reason is defused', async () => {
    const r = await berth(['containers'], env);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('exited: copy\ufffd]52;c;cm0gLXJmIH4K\ufffd clear\ufffd[2J');
    expect(r.out + r.err).not.toMatch(RAW);
  });

  it('berth workloads, the list and one run: the reason and the path are defused', async () => {
    const list = await berth(['workloads'], env);
    expect(list.code, list.err).toBe(0);
    expect(list.out).toContain('failed');
    expect(list.out + list.err).not.toMatch(RAW);
    const one = await berth(['workloads', String(workloadId)], env);
    expect(one.code, one.err).toBe(0);
    expect(one.out).toContain('gave up: copy\ufffd]52');
    expect(one.out).toContain('GET /copy\ufffd]52');
    expect(one.out + one.err).not.toMatch(RAW);
  });

  it('the JSON output keeps the exact text (JSON escapes it)', async () => {
    const r = await berth(['containers', '--json'], env);
    expect(r.code, r.err).toBe(0);
    expect(r.out).not.toMatch(RAW);
    expect((JSON.parse(r.out) as { containers: { status_reason: string }[] }).containers[0].status_reason).toBe(`exited: ${EVIL}`);
  });
});
