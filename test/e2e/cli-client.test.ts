import { spawn } from 'node:child_process';
import { chmod, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { request } from 'undici';
import { up, type UpHandle } from '../../control-plane/up.js';
import { openLogStreams } from '../../control-plane/runtime/logs.js';
import { BASE_IMAGE, describeWithDocker, docker, removeClusterContainers } from '../helpers/docker.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';
import { tempDir } from '../helpers/tmp.js';
import { BIN, built, sleep, viaProxy as proxyGet, waitFor } from './support.js';

/**
 * The `berth` client end to end, as a user runs it: real `node bin/berth.js` processes against a
 * real control plane + proxy (`up()` in this process) and Docker. login (stdin, 0600 file, wrong
 * password, unreachable API), deploy of a folder with a .dockerignore (piped and on a pseudo-
 * terminal), a link out of the folder, a failing build's exit code and log tail, logs (tail and
 * follow, and the Docker stream closed when the client leaves), apps / containers / traffic tables,
 * logs isolation between users.
 */

interface Run { code: number | null; out: string; err: string }

let h: UpHandle;
let pg: TestPostgres;
let tmp: { dir: string; cleanup(): Promise<void> };
let env: Record<string, string>;
const HOST = 'cli-hello.localhost';

/** `berth …` with the test's config dir and API, stdin given, output captured (piped: not a TTY). */
function berth(args: string[], o: { input?: string; extraEnv?: Record<string, string> } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env, ...o.extraEnv }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.stdin.end(o.input ?? '');
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

async function writeApp(dir: string, page: string, extra: Record<string, string> = {}): Promise<void> {
  await mkdir(join(dir, 'www'), { recursive: true });
  await writeFile(join(dir, 'Dockerfile'), `FROM ${BASE_IMAGE}\nCOPY . /www\nCMD ["sh", "-c", "echo starting on $PORT; exec httpd -f -vv -p $PORT -h /www"]\n`);
  await writeFile(join(dir, 'www', 'index.html'), page);
  for (const [name, content] of Object.entries(extra)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), content);
  }
}

/** The API token `berth login` stored (the tests sign in once, early). */
async function apiToken(): Promise<string> {
  const creds = JSON.parse(await readFile(join(tmp.dir, 'config', 'credentials.json'), 'utf8'));
  return creds.apis[h.cp.url].token as string;
}

/** GET through the proxy with a Host header (fetch would not send one of its own choosing). */
function viaProxy(host: string, path: string): Promise<{ status: number; body: string }> {
  return proxyGet(Number(new URL(h.proxyUrl).port), host, path);
}

await describeWithDocker('berth client commands (login, deploy, logs, apps, containers, traffic)', () => {
  beforeAll(async () => {
    if (!built()) throw new Error('dist/ is missing: run `npx tsc -p .` (npm test builds first)');
    tmp = await tempDir('berth-cli-');
    pg = await startTestPostgres();
    h = await up({
      apiListen: '127.0.0.1:0', proxyListen: '127.0.0.1:0', adminListen: '127.0.0.1:0', dataDir: join(tmp.dir, 'data'),
      databaseUrl: await pg.createDatabase(), quiet: true,
      // (an instance that does not answer is said to be unhealthy after 3 s, not 30: the deploy to the wrong port)
      // (and a crashed instance is replaced within a second, not three: the deploy that crashes)
      // (and an upload limit of 4 MiB: the deploy past it is refused before anything is sent)
      tenant: { health: { startupGraceMs: 3000 }, reconcileIntervalMs: 1000, maxUploadBytes: 4 * 1024 * 1024 },
    });
    env = { BERTH_CONFIG_DIR: join(tmp.dir, 'config'), BERTH_API: h.cp.url, BERTH_TOKEN: '', NO_COLOR: '' };
  });

  afterAll(async () => {
    const images = h ? (await h.cp.db.query<{ docker_image: string }>('SELECT docker_image FROM images')).rows : [];
    const clusterId = h?.cp.app.platform.clusterId;
    await h?.close();
    if (clusterId) await removeClusterContainers(clusterId);
    for (const i of images) await docker.getImage(i.docker_image).remove({ force: true }).catch(() => {});
    await pg?.stop();
    await tmp?.cleanup();
  });

  it('login: wrong password exits 3, an unreachable API exits 4 naming the URL, commands before login say so', async () => {
    const wrong = await berth(['login', '--email', 'example@gmail.com'], { input: 'nope\n' });
    expect(wrong.code).toBe(3);
    expect(wrong.err).toContain('wrong email or password');

    const away = await berth(['apps', '--api', 'http://127.0.0.1:1'], { extraEnv: { BERTH_TOKEN: 'berth_whatever' } });
    expect(away.code).toBe(4);
    expect(away.err).toContain('cannot reach the berth API at http://127.0.0.1:1');

    const notYet = await berth(['apps']);
    expect(notYet.code).toBe(3);
    expect(notYet.err).toMatch(/not logged in to http:\/\/127\.0\.0\.1:\d+\. Run `berth login/);

    const usage = await berth(['deploy', '--min', 'lots', '--host', HOST]);
    expect(usage.code).toBe(2);
    expect(usage.err).toContain('--min must be an integer');
    // the server's tag rule, checked before anything is packed or sent
    const tag = await berth(['deploy', '--tag', '1canary', '--host', HOST]);
    expect(tag.code).toBe(2);
    expect(tag.err).toContain('starting with a letter');
    // the server's hostname, CPU and environment rules too (they were found only after the upload)
    const label = 'x'.repeat(64);
    for (const [flags, says] of [
      [['--host', '-x.localhost'], 'is not a valid hostname'], [['--host', 'a..localhost'], 'is not a valid hostname'],
      [['--host', `${label}.localhost`], 'is not a valid hostname'], [['--host', HOST, '--cpu', '0'], 'must be between 0.01 and 256 CPUs'],
      [['--host', HOST, '--cpu', '1000'], 'must be between 0.01 and 256 CPUs'], [['--host', HOST, '--env', `A=${'v'.repeat(33 * 1024)}`], '--env: the value of A is longer than 32768 bytes'],
      [['--host', HOST, ...Array.from({ length: 201 }, (_, i) => ['--env', `V${i}=1`]).flat()], '--env: 201 variables; at most 200'],
    ] as const) {
      const r = await berth(['deploy', ...flags]);
      expect([r.code, r.err], flags.join(' ').slice(0, 80)).toEqual([2, expect.stringContaining(says)]);
    }
  });

  it('login reads email and password from stdin and stores an API token, mode 0600', async () => {
    const r = await berth(['login'], { input: 'example@gmail.com\nexample123\n' });
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`Logged in to ${h.cp.url} as example@gmail.com`);
    const file = join(tmp.dir, 'config', 'credentials.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const creds = JSON.parse(await readFile(file, 'utf8'));
    expect(creds.current).toBe(h.cp.url);
    expect(creds.apis[h.cp.url].token).toMatch(/^berth_/);
  });

  it('deploy (piped): packs without what .dockerignore names, streams the build, waits until healthy, prints the URLs', async () => {
    const app = join(tmp.dir, 'app');
    await writeApp(app, '<h1>v1</h1>\n', { 'www/secret.txt': 'do not ship\n', 'www/debug.log': 'noise\n', 'notes/todo.md': 'x\n' });
    await writeFile(join(app, '.dockerignore'), '# not for the image\nwww/secret.txt\n**/*.log\nnotes\n');
    const r = await berth(['deploy', app, '--host', HOST, '--max', '2']);
    expect(r.code, r.out + r.err).toBe(0);
    expect(r.err).toContain('Packed');
    expect(r.err).toContain('ignored by .dockerignore');
    expect(r.err).toMatch(/│ Step 1\/\d+ : FROM/); // the build log, live
    expect(r.err).toContain('instance healthy');
    expect(r.out).toContain(`Deployed ${HOST} revision 1`);
    const port = new URL(h.proxyUrl).port;
    expect(r.out).toContain(`http://${HOST}:${port}/`);
    expect(r.out).toContain(`${h.proxyUrl}/apps/${HOST}/`);
    expect(r.out + r.err).not.toContain('\x1b['); // piped: no escape codes
    expect(r.err).not.toContain('\r');
    // the app answers through the proxy, without the ignored files
    expect(await viaProxy(HOST, '/www/index.html')).toEqual({ status: 200, body: '<h1>v1</h1>' });
    expect((await viaProxy(HOST, '/www/secret.txt')).status).toBe(404);
    expect((await viaProxy(HOST, '/www/debug.log')).status).toBe(404);
    expect((await viaProxy(HOST, '/notes/todo.md')).status).toBe(404);
    expect((await viaProxy(HOST, '/Dockerfile')).status).toBe(200); // always sent, as docker does
  });

  it('deploy on a terminal draws a progress bar and spinner in place (pseudo-terminal via script)', async () => {
    const app = join(tmp.dir, 'app');
    await writeFile(join(app, 'www', 'index.html'), '<h1>v2</h1>\n');
    // a build step that tries to retitle the terminal: shown defused
    await writeFile(join(app, 'Dockerfile'), `FROM ${BASE_IMAGE}\nRUN printf 'title:\\033]0;pwned\\007\\n'\nCOPY . /www\nCMD ["sh", "-c", "echo starting on $PORT; exec httpd -f -vv -p $PORT -h /www"]\n`);
    const cmd = `${process.execPath} ${BIN} deploy ${app} --host ${HOST}`;
    // asynchronously: the control plane runs in this process
    const r = await new Promise<{ status: number | null; stdout: string }>((resolve) => {
      const c = spawn('script', ['-qfec', cmd, '/dev/null'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      c.stdout.on('data', (d) => { stdout += d; });
      c.stderr.on('data', (d) => { stdout += d; });
      c.on('exit', (status) => resolve({ status, stdout }));
    });
    expect(r.status, r.stdout).toBe(0);
    expect(r.stdout).toContain('\r\x1b[2K'); // lines redrawn in place
    expect(r.stdout).toMatch(/Uploading \[#*\.*\]/);
    expect(r.stdout).toContain('\x1b[32m✔\x1b[39m'); // colour on a terminal
    expect(r.stdout).toContain(`Deployed ${HOST} revision 2`);
    expect(r.stdout).toContain('title:\ufffd]0;pwned\ufffd');
    expect(r.stdout).not.toContain('\x1b]0;pwned');
    expect((await viaProxy(HOST, '/www/index.html')).body).toBe('<h1>v2</h1>'); // deploy returns once the proxies route to it
  });

  it('deploy --min 0: proven with one instance first, and the URL answers at once', async () => {
    const app = join(tmp.dir, 'zero');
    await writeApp(app, 'from zero\n');
    const r = await berth(['deploy', app, '--host', 'zero.localhost', '--min', '0']);
    expect(r.code, r.out + r.err).toBe(0);
    expect(r.err).toContain('1 instance healthy: it can serve (the autoscaler scales it to zero when idle)');
    expect(await viaProxy('zero.localhost', '/www/index.html')).toEqual({ status: 200, body: 'from zero' });
  });

  it('deploy refuses a symlink that leads out of the folder, and a folder without a Dockerfile', async () => {
    const app = join(tmp.dir, 'leaky');
    await writeApp(app, 'x\n');
    await symlink('/etc/passwd', join(app, 'www', 'passwd'));
    const r = await berth(['deploy', app, '--host', 'leaky.localhost']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('symlink www/passwd points outside');

    const empty = join(tmp.dir, 'empty');
    await mkdir(empty, { recursive: true });
    const e = await berth(['deploy', empty, '--host', 'empty.localhost']);
    expect(e.code).toBe(1);
    expect(e.err).toContain('has no Dockerfile');
    const gone = await berth(['deploy', join(tmp.dir, 'nope'), '--host', 'nope.localhost']);
    expect(gone.code).toBe(2);
  });

  it('a failing build exits 1 and prints the tail of its log', async () => {
    const app = join(tmp.dir, 'broken');
    await mkdir(app, { recursive: true });
    await writeFile(join(app, 'Dockerfile'), `FROM ${BASE_IMAGE}\nRUN echo "about to fail: boom" && exit 3\n`);
    const r = await berth(['deploy', app, '--host', 'broken.localhost', '--json']);
    expect(r.code, r.err).toBe(1);
    expect(r.err).toContain('Build failed');
    expect(r.err).toMatch(/last lines of the build log:[\s\S]*boom/);
    const j = JSON.parse(r.out);
    expect(j).toMatchObject({ ok: false, status: 'build_failed', app_hostname: 'broken.localhost' });
    expect(j.log_tail.join('\n')).toContain('boom');
    // the whole log, as the failure says
    expect(r.err).toContain('full log: berth logs broken.localhost --build --revision 1');
    const full = await berth(['logs', 'broken.localhost', '--build', '--revision', '1']);
    expect([full.code, full.out], full.err).toEqual([1, expect.stringMatching(/Step 1\/\d+ : FROM [\s\S]*about to fail: boom[\s\S]*berth: BUILD FAILED: .*non-zero code: 3\n$/)]);
    expect((await berth(['logs', 'broken.localhost', '--build'])).out).toBe(full.out);
    const none = await berth(['logs', 'broken.localhost', '--build', '--revision', '9']);
    expect([none.code, none.err.trim()]).toEqual([1, 'berth logs: broken.localhost has no revision 9 (it has 1)']);
    expect((await berth(['logs', 'broken.localhost', '--build', '--tail', '5'])).code).toBe(2);
    expect((await berth(['logs', 'broken.localhost', '--revision', '1'])).code).toBe(2);
    // a folder past the platform's upload limit is refused once packed, before it is sent (from a
    // walkthrough: a 200 MiB folder was refused at the end of its upload)
    const big = join(tmp.dir, 'big');
    await mkdir(big, { recursive: true });
    await writeFile(join(big, 'Dockerfile'), `FROM ${BASE_IMAGE}\nCOPY . /x\n`);
    await writeFile(join(big, 'noise.bin'), randomBytes(5 * 1024 * 1024));
    const tooBig = await berth(['deploy', big, '--host', 'big.localhost']);
    expect([tooBig.code, tooBig.err]).toEqual([1, expect.stringContaining("more than this platform's upload limit of 4.0 MiB: leave out what the build does not need with a .dockerignore")]);
    expect(tooBig.err).not.toContain('Uploaded');
    // its instance logs: none, and where to look instead (from a walkthrough: it printed nothing)
    const empty = await berth(['logs', 'broken.localhost']);
    expect([empty.code, empty.out, empty.err.trim()]).toEqual([0, '', 'berth logs: no instance of broken.localhost printed anything; `berth apps broken.localhost` shows its revisions, `berth logs broken.localhost --build` the build log']);

    // --follow on a build under way: its lines as they come, each once, until it ends
    const slow = join(tmp.dir, 'slowbuild');
    await mkdir(slow, { recursive: true });
    await writeFile(join(slow, 'Dockerfile'), `FROM ${BASE_IMAGE}\nRUN echo step-one && sleep 3 && echo step-two\nCMD ["sh", "-c", "exec httpd -f -p $PORT -h /"]\n`);
    const deploying = berth(['deploy', slow, '--host', 'slowbuild.localhost']);
    await waitFor('the build under way', async () => {
      const a = await berth(['apps', 'slowbuild.localhost', '--json']);
      return a.code === 0 && JSON.parse(a.out).revisions?.[0]?.status === 'building';
    }, 30_000, 100);
    const followed = await berth(['logs', 'slowbuild.localhost', '--build', '--follow']);
    expect(followed.code, followed.err).toBe(0);
    expect(followed.out.split('\n').filter((l) => l === 'step-two')).toHaveLength(1);
    expect(followed.out).toContain('berth: build succeeded');
    expect((await deploying).code).toBe(0);
    expect((await berth(['delete', 'slowbuild.localhost', '--yes'])).code).toBe(0);
  });

  it('an app that exits at start fails the deploy within seconds, with its last output; one listening on another port is told about $PORT', async () => {
    const crash = join(tmp.dir, 'crash');
    await mkdir(crash, { recursive: true });
    await writeFile(join(crash, 'Dockerfile'), `FROM ${BASE_IMAGE}\nCMD ["sh", "-c", "echo starting; echo 'config: DATABASE_URL is not set' >&2; exit 3"]\n`);
    const t0 = Date.now();
    const r = await berth(['deploy', crash, '--host', 'crash.localhost']);
    expect(r.code, r.err).toBe(1);
    // (its stdout and stderr lines, in whichever order Docker gives two streams written at once)
    // (exited once running, read from Docker; or exited as Docker started it, kept by the control plane)
    // (seen by the CLI while the instance is down, or given up by the control plane first)
    const shown = /its instance exits at start \((?:exited with code 3|container exited at once \(exit code 3\)), [3-9] times at start\)\. Its last output:\n((?: {2}\| .*\n)+)/.exec(r.err);
    expect(shown?.[1].split('\n').sort(), r.err).toEqual(['', '  | config: DATABASE_URL is not set', '  | starting']);
    expect(r.err).toContain('the control plane gives it up (its instances are stopped): fix the app and deploy again');
    expect(Date.now() - t0).toBeLessThan(45_000); // (it waited out --timeout, 10 minutes)

    const other = join(tmp.dir, 'otherport');
    await mkdir(join(other, 'www'), { recursive: true });
    await writeFile(join(other, 'Dockerfile'), `FROM ${BASE_IMAGE}\nCMD ["httpd", "-f", "-p", "9999", "-h", "/"]\n`);
    const w = await berth(['deploy', other, '--host', 'otherport.localhost', '--timeout', '9']);
    expect(w.code, w.err).toBe(1);
    expect(w.err).toContain('nothing listens on port 8080 in the container: the app must listen on $PORT (8080), or deploy with --port N');
    for (const host of ['crash.localhost', 'otherport.localhost']) expect((await berth(['delete', host, '--yes'])).code).toBe(0);
  }, 90_000);

  it('logs: the tail of every instance, prefixed by container; --json is one object per line', async () => {
    await viaProxy(HOST, '/www/index.html');
    const r = await waitFor('the request in the logs', async () => {
      const x = await berth(['logs', HOST, '--tail', '20']);
      return x.code === 0 && /response:200/.test(x.out) && x;
    }, 15_000, 300);
    expect(r.out).toMatch(/^\[\d+\] starting on 8080$/m);
    const j = await berth(['logs', HOST, '--tail', '1', '--json']);
    const lines = j.out.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ container_id: expect.any(Number), stream: expect.stringMatching(/stdout|stderr/), line: expect.any(String) });
    expect((await berth(['logs', HOST, '--since', 'yesterday'])).code).toBe(2);
    const other = await berth(['logs', 'not-mine.localhost']);
    expect(other.code).toBe(1);
    expect(other.err).toContain('app not found (404 not_found)');
  });

  it('logs --follow streams new lines until interrupted, and the Docker stream closes with it', async () => {
    const base = openLogStreams();
    const child = spawn(process.execPath, [BIN, 'logs', HOST, '--follow', '--tail', '0'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    await waitFor('the follow to attach', async () => openLogStreams() > base, 10_000, 50);
    const marker = `/follow-${Date.now()}`;
    await viaProxy(HOST, marker);
    await waitFor('the new line', async () => out.includes(marker), 10_000, 100);
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    await waitFor('the Docker log stream to close', async () => openLogStreams() === base, 5_000, 50);
  });

  it('apps and containers: tables, and --json for scripts', async () => {
    const apps = await berth(['apps']);
    expect(apps.code, apps.err).toBe(0);
    expect(apps.out).toMatch(/^HOST\s+REVISION\s+STATUS\s+INSTANCES\s+TRAFFIC$/m);
    expect(apps.out).toMatch(new RegExp(`^${HOST.replace(/\./g, '\\.')}\\s+2 \\(image \\d+\\)\\s+ready\\s+1/1\\s+100%`, 'm'));
    const j = JSON.parse((await berth(['apps', '--json'])).out);
    expect(j.apps.find((a: { app_hostname: string }) => a.app_hostname === HOST).revisions.length).toBe(2);
    const cs = await berth(['containers', '--app', HOST]);
    expect(cs.code).toBe(0);
    expect(cs.out).toMatch(/running\s+healthy/);
    const typo = await berth(['containers', '--app', 'cli-helo.localhost']);
    expect([typo.code, typo.err.trim()]).toEqual([1, `berth containers: you have no app cli-helo.localhost (did you mean ${HOST}?)`]);
  });

  it('containers stop|start: by id; bad ids and actions are usage errors', async () => {
    // (the app that scales from zero: stopping its instance scales it to zero, nothing else waits on it)
    const list = JSON.parse((await berth(['containers', '--app', 'zero.localhost', '--json'])).out).containers as { id: number; desired: string }[];
    const c = list.find((x) => x.desired === 'running')!;
    expect(c).toBeDefined();
    const stop = await berth(['containers', 'stop', String(c.id)]);
    expect([stop.code, stop.out]).toEqual([0, `container ${c.id}: stopped (stopped by its user)\n`]);
    const again = await berth(['containers', 'stop', String(c.id)]);
    expect([again.code, again.err]).toEqual([1, expect.stringContaining(`container ${c.id} is already stopped`)]);
    const start = await berth(['containers', 'start', String(c.id), '--json']);
    expect(start.code, start.err).toBe(0);
    expect(JSON.parse(start.out).containers[0]).toMatchObject({ id: c.id, status: 'running' });
    for (const bad of [['kill', '1'], ['stop'], ['stop', 'x1'], ['stop', '0'], ['stop', '99999999999999999999']]) {
      expect((await berth(['containers', ...bad])).code, bad.join(' ')).toBe(2);
    }
    expect((await berth(['containers', 'stop', '999999'])).code).toBe(1);
  });

  it('traffic: a tagged revision without traffic, a split, validation, a deploy that keeps the split, then back to latest', async () => {
    const app = join(tmp.dir, 'app');
    await writeFile(join(app, 'www', 'index.html'), '<h1>v3</h1>\n');
    const d = await berth(['deploy', app, '--host', HOST, '--no-traffic', '--tag', 'canary', '--json']);
    expect(d.code, d.err).toBe(0);
    const dj = JSON.parse(d.out);
    expect(dj).toMatchObject({ ok: true, revision: 3, traffic_percent: 0, traffic_tag: 'canary' });
    expect(dj.tag_urls[0]).toContain(`canary---${HOST}`);
    expect((await viaProxy(`canary---${HOST}`, '/www/index.html')).body).toBe('<h1>v3</h1>');
    expect((await viaProxy(HOST, '/www/index.html')).body).toBe('<h1>v2</h1>');

    expect((await berth(['traffic', HOST, '2=50', '3=40'])).code).toBe(2);
    const missing = await berth(['traffic', HOST, '9=100']);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain('has no revision 9');
    const typo = await berth(['traffic', HOST, '--remove-tag', 'canray']);
    expect([typo.code, typo.err.trim()]).toEqual([2, `berth traffic: ${HOST} has no tag "canray" to remove; its tags: canary`]);
    // the API's refusal names the entry as the user wrote it, not by its index in the request
    const long = 'a'.repeat(59);
    const refused = await berth(['traffic', HOST, '--tag', `${long}=2`]);
    expect([refused.code, refused.err], refused.err).toEqual([1, expect.stringContaining(`--tag ${long}=2: tag "${long}" makes the DNS label`)]);
    const split = await berth(['traffic', HOST, '2=50', '3=50']);
    expect(split.code, split.err).toBe(0);
    expect(split.out).toMatch(/^3\s.*50%\s+http:\/\/canary---/m); // the tag is kept
    expect(split.out).toContain('split: 2=50 3=50; deploys keep this split: a new revision gets no traffic until a split names it');
    const seen = new Set<string>();
    for (let i = 0; i < 10; i++) seen.add((await viaProxy(HOST, '/www/index.html')).body);
    expect(seen).toEqual(new Set(['<h1>v2</h1>', '<h1>v3</h1>']));
    // a plain deploy keeps this split set by hand, as Cloud Run does: no share (proven, then idle)
    await writeFile(join(app, 'www', 'index.html'), '<h1>v4</h1>\n');
    const kept = await berth(['deploy', app, '--host', HOST]);
    expect(kept.code, kept.err).toBe(0);
    expect(kept.err).toContain('1 instance healthy: it can serve (it runs nothing until a split names it)');
    expect(kept.out).toContain('revision 4 (image');
    expect(kept.out).toContain('serving 0% of traffic');
    expect(kept.out).toContain(`deploys keep that split, as Cloud Run does: this revision has no share of it (berth traffic ${HOST} 4=100 sends it all)`);
    expect(kept.out).toContain(`berth traffic ${HOST} latest=100 sends all of it to each new deploy again`);
    const after = new Set<string>();
    for (let i = 0; i < 10; i++) after.add((await viaProxy(HOST, '/www/index.html')).body);
    expect(after).toEqual(new Set(['<h1>v2</h1>', '<h1>v3</h1>']));
    // two deploys in a row into the kept split: the first, superseded before it was proven, says so
    // and succeeds (from a walkthrough: it failed, "a later deploy took its place")
    const slowStart = join(tmp.dir, 'slowstart');
    await mkdir(join(slowStart, 'www'), { recursive: true });
    await writeFile(join(slowStart, 'www', 'index.html'), '<h1>v5</h1>\n');
    await writeFile(join(slowStart, 'Dockerfile'), `FROM ${BASE_IMAGE}\nCOPY . /www\nCMD ["sh", "-c", "sleep 5; exec httpd -f -p $PORT -h /www"]\n`);
    const first = berth(['deploy', slowStart, '--host', HOST]);
    await waitFor('the first upload', async () => ((await h.cp.db.query('SELECT 1 FROM images WHERE app_hostname = $1 AND revision = 5', [HOST])).rowCount === 1 ? true : undefined), 30_000);
    const second = await berth(['deploy', app, '--host', HOST]);
    const superseded = await first;
    expect([second.code, superseded.code], superseded.err).toEqual([0, 0]);
    expect(superseded.err).toContain('a newer revision was deployed before this one was proven: it is proven instead, and this one is not started');
    expect(superseded.out).toContain('this revision has no share of it (a newer one is proven in its place)');
    expect(second.out).toContain('revision 6 (image');
    const back = await berth(['traffic', HOST, 'latest=100', '--json']);
    expect(back.code, back.err).toBe(0);
    expect(JSON.parse(back.out).traffic).toEqual([expect.objectContaining({ latest: true, percent: 100 }), expect.objectContaining({ tag: 'canary' })]);
  });

  it('logs API: another user gets 404 for the container and the app; bad queries are 400', async () => {
    const signup = await fetch(`${h.cp.url}/api/auth/signup`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'other@example.com', password: 'correct-horse-1' }) });
    const { token } = await signup.json() as { token: string };
    const mine = (await h.cp.db.query<{ id: number }>(`SELECT c.id FROM containers c JOIN images i ON i.id = c.image_id WHERE i.app_hostname = $1 AND c.status = 'running' LIMIT 1`, [HOST])).rows[0];
    const as = (path: string, t = token) => fetch(`${h.cp.url}${path}`, { headers: { authorization: `Bearer ${t}` } });
    expect((await as(`/api/containers/${mine.id}/logs`)).status).toBe(404);
    expect((await as(`/api/apps/${HOST}/logs`)).status).toBe(404);
    expect((await as(`/api/apps/${HOST}/logs?follow=1`)).status).toBe(404);
    const ownerToken = JSON.parse(await readFile(join(tmp.dir, 'config', 'credentials.json'), 'utf8')).apis[h.cp.url].token as string;
    for (const q of ['tail=-1', 'tail=1e400', 'since=soon', 'follow=maybe', 'container=0', 'unknown=1']) {
      const r = await as(`/api/apps/${HOST}/logs?${q}`, ownerToken);
      expect(r.status, q).toBe(400);
      expect((await r.json() as { error: { code: string } }).error.code).toBe('invalid_request');
    }
    expect((await as(`/api/apps/${HOST}/logs?container=999999`, ownerToken)).status).toBe(404);
    const text = await as(`/api/containers/${mine.id}/logs?tail=2&timestamps=1`, ownerToken);
    expect(text.status).toBe(200);
    expect(text.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await text.text()).toMatch(/^\d{4}-\d\d-\d\dT\S+Z /m);
    await sleep(0);
  });

  it('container logs: a follow ends with the container (SSE end event), a client that leaves closes the Docker stream', async () => {
    const app = join(tmp.dir, 'stopper');
    await writeApp(app, 'stop me\n');
    const d = await berth(['deploy', app, '--host', 'stopper.localhost', '--json']);
    expect(d.code, d.err).toBe(0);
    const token = JSON.parse(await readFile(join(tmp.dir, 'config', 'credentials.json'), 'utf8')).apis[h.cp.url].token as string;
    const auth = { authorization: `Bearer ${token}` };
    const { rows: [c] } = await h.cp.db.query<{ id: number }>(
      `SELECT c.id FROM containers c JOIN images i ON i.id = c.image_id WHERE i.app_hostname = 'stopper.localhost' AND c.status = 'running' LIMIT 1`);
    const base = openLogStreams();

    // plain text follow, abandoned by its client
    const ac = new AbortController();
    const text = await fetch(`${h.cp.url}/api/containers/${c.id}/logs?follow=1`, { headers: auth, signal: ac.signal });
    expect(text.headers.get('content-type')).toMatch(/^text\/plain/);
    const reader = text.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toContain('starting on 8080');
    await waitFor('the follow stream', async () => openLogStreams() === base + 1, 5_000, 50);
    ac.abort();
    await waitFor('the Docker stream to close after the client left', async () => openLogStreams() === base, 5_000, 50);

    // SSE follow, ended by the container stopping
    const sse = await fetch(`${h.cp.url}/api/containers/${c.id}/logs?follow=1&tail=1`, { headers: { ...auth, accept: 'text/event-stream' } });
    expect(sse.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const body = sse.text();
    await waitFor('the follow stream', async () => openLogStreams() === base + 1, 5_000, 50);
    expect((await fetch(`${h.cp.url}/api/containers/${c.id}/stop`, { method: 'POST', headers: auth })).status).toBe(200);
    const all = await body;
    expect(all).toMatch(/event: log\ndata: \{"container_id":\d+/);
    expect(all).toContain('event: end\ndata: {"status":"container_stopped"}');
    expect(openLogStreams()).toBe(base);
  });

  it('deploy --env/--env-file: the app sees its variables and berth\'s (K_SERVICE, K_REVISION); the next revision inherits them; the API shows names only', async () => {
    const app = join(tmp.dir, 'envapp');
    await mkdir(app, { recursive: true });
    await writeFile(join(app, 'Dockerfile'), `FROM ${BASE_IMAGE}\nCMD ["sh", "-c", "mkdir -p /tmp/w && env > /tmp/w/env.txt && exec httpd -f -p $PORT -h /tmp/w"]\n`);
    await writeFile(join(app, '.env'), '# settings\nGREETING="hello world"\nexport MODE = test\n');
    const host = 'cli-env.localhost';
    const first = await berth(['deploy', app, '--host', host, '--env-file', join(app, '.env'), '--env', 'API_KEY=s3cr3t-value', '--env', 'MODE=prod']);
    expect(first.code, first.out + first.err).toBe(0);
    const seen1 = (await viaProxy(host, '/env.txt')).body.split('\n');
    expect(seen1).toEqual(expect.arrayContaining(['GREETING=hello world', 'MODE=prod', 'API_KEY=s3cr3t-value', `K_SERVICE=${host}`, `K_REVISION=${host}-00001`]));
    expect(seen1.find((l) => l.startsWith('PORT='))).toMatch(/^PORT=\d+$/);

    const second = await berth(['deploy', app, '--host', host, '--unset-env', 'GREETING', '--env', 'EXTRA=1', '--json']);
    expect(second.code, second.out + second.err).toBe(0);
    const seen2 = (await viaProxy(host, '/env.txt')).body.split('\n');
    expect(seen2).toEqual(expect.arrayContaining(['MODE=prod', 'API_KEY=s3cr3t-value', 'EXTRA=1', `K_REVISION=${host}-00002`]));
    expect(seen2.some((l) => l.startsWith('GREETING='))).toBe(false);

    // names in answers, values nowhere the API or its events reach
    const images = await (await fetch(`${h.cp.url}/api/images`, { headers: { authorization: `Bearer ${await apiToken()}` } })).text();
    const mine = (JSON.parse(images).images as { app_hostname: string; revision: number; env_names: string[] }[]).filter((i) => i.app_hostname === host);
    expect(mine.find((i) => i.revision === 2)?.env_names).toEqual(['API_KEY', 'EXTRA', 'MODE']);
    expect(images).not.toContain('s3cr3t');
    const events = (await h.cp.db.query<{ payload: unknown }>('SELECT payload FROM events WHERE app_hostname = $1', [host])).rows;
    expect(JSON.stringify(events)).not.toContain('s3cr3t');

    // no build: a new revision of the same image with one variable changed and a new request timeout
    const quick = await berth(['deploy', '--host', host, '--no-build', '--env', 'EXTRA=2', '--request-timeout', '42', '--session-affinity', '--upstream-pipeline', '4', '--json']);
    expect(quick.code, quick.out + quick.err).toBe(0);
    expect(quick.err).toContain('no build');
    expect(JSON.parse(quick.out)).toMatchObject({ ok: true, revision: 3 });
    const seen3 = (await viaProxy(host, '/env.txt')).body.split('\n');
    expect(seen3).toEqual(expect.arrayContaining(['EXTRA=2', 'MODE=prod', 'API_KEY=s3cr3t-value', `K_REVISION=${host}-00003`]));
    const revs = (JSON.parse(await (await fetch(`${h.cp.url}/api/images`, { headers: { authorization: `Bearer ${await apiToken()}` } })).text()).images as
      { id: number; app_hostname: string; revision: number; docker_image: string; docker_image_id: string; request_timeout_s: number; session_affinity: boolean; upstream_pipeline: number }[]).filter((i) => i.app_hostname === host);
    const [r2, r3] = [revs.find((i) => i.revision === 2)!, revs.find((i) => i.revision === 3)!];
    expect(r3.docker_image_id).toBe(r2.docker_image_id);
    expect(r3.docker_image).not.toBe(r2.docker_image);
    expect(r3.request_timeout_s).toBe(42);
    expect(r3.session_affinity).toBe(true);
    expect(r3.upstream_pipeline).toBe(4);
    expect(r2.upstream_pipeline).toBe(1);
    // session affinity reached the proxy: it hands out the cookie naming the instance
    const sticky = await request(`${h.proxyUrl}/env.txt`, { headers: { host } });
    await sticky.body.text();
    expect(String(sticky.headers['set-cookie'])).toMatch(/^berth-affinity=c-\d+; Path=\/; Max-Age=2592000; HttpOnly; SameSite=Lax$/);
    expect((await berth(['deploy', '--host', host, '--no-build', '--session-affinity', '--no-session-affinity'])).code).toBe(2);
    expect((await berth(['deploy', '--host', host, '--no-build', '--upstream-pipeline', '17'])).code).toBe(2);
    expect((await berth(['deploy', app, '--host', host, '--no-build'])).code).toBe(2);
    // berth apps HOST: each revision's settings, variable names but never their values
    const detail = await berth(['apps', host]);
    expect(detail.code, detail.err).toBe(0);
    const row3 = detail.out.split('\n').find((l) => l.startsWith('3 '));
    expect(row3).toMatch(/42s/);
    expect(row3).toContain('4 deep');
    expect(detail.out.split('\n').find((l) => l.startsWith('2 '))).toMatch(/\boff\b/);
    expect(row3).toContain('API_KEY, EXTRA, MODE');
    expect(detail.out).not.toContain('s3cr3t');
    const detailJson = JSON.parse((await berth(['apps', host, '--json'])).out);
    expect(detailJson.revisions.find((r: { revision: number }) => r.revision === 3).settings).toMatchObject({ request_timeout_s: 42, upstream_pipeline: 4, env_names: ['API_KEY', 'EXTRA', 'MODE'] });
    expect((await berth(['apps', 'nobody.localhost'])).code).toBe(1);

    // no build and no traffic: `latest` is pinned to revision 3, which serves, not to the new one
    // (made ready at once, it looked like the newest that could serve)
    const hidden = await berth(['deploy', '--host', host, '--no-build', '--no-traffic', '--env', 'EXTRA=3', '--json']);
    expect(hidden.code, hidden.out + hidden.err).toBe(0);
    expect(JSON.parse(hidden.out)).toMatchObject({ ok: true, revision: 4, traffic_percent: 0, joins_traffic: 'none' });
    const pinned = JSON.parse((await berth(['traffic', host, '--json'])).out).traffic;
    expect(pinned).toEqual([expect.objectContaining({ image_id: r3.id, percent: 100 })]);
    expect((await viaProxy(host, '/env.txt')).body).toContain(`K_REVISION=${host}-00003`);

    // refused before anything is packed: a reserved name, a contradiction
    const reserved = await berth(['deploy', app, '--host', host, '--env', 'PORT=1']);
    expect(reserved.code).toBe(2);
    expect(reserved.err).toContain('set by berth');
    expect((await berth(['deploy', app, '--host', host, '--env', 'A=1', '--unset-env', 'A'])).code).toBe(2);
    expect((await berth(['delete', host, '--yes'])).code).toBe(0);
    // every revision's tag went with it, the shared image with the last one
    for (const r of [r2, r3]) expect(await docker.getImage(r.docker_image).inspect().then(() => 'exists', () => 'gone')).toBe('gone');
  }, 180_000);

  it('deploy --request-timeout: a response slower than it is a 504 from the proxy; a faster one passes', async () => {
    const app = join(tmp.dir, 'slow');
    await writeApp(app, 'ok\n', { 'cgi-bin/slow': '#!/bin/sh\nsleep 3\necho "Content-Type: text/plain"\necho\necho slow\n' });
    await chmod(join(app, 'cgi-bin', 'slow'), 0o755);
    const host = 'cli-slow.localhost';
    expect((await berth(['deploy', app, '--host', host, '--request-timeout', 'nope'])).code).toBe(2);
    const d = await berth(['deploy', app, '--host', host, '--request-timeout', '1s']);
    expect(d.code, d.out + d.err).toBe(0);
    const t0 = Date.now();
    const slow = await viaProxy(host, '/cgi-bin/slow');
    expect(slow.status).toBe(504);
    expect(Date.now() - t0).toBeLessThan(2900);
    expect(await viaProxy(host, '/www/index.html')).toEqual({ status: 200, body: 'ok' });
    // the next revision with room for it
    const again = await berth(['deploy', '--host', host, '--no-build', '--request-timeout', '10']); // (the same image: no build)
    expect(again.code, again.out + again.err).toBe(0);
    expect(await viaProxy(host, '/cgi-bin/slow')).toEqual({ status: 200, body: 'slow' });
    // --private: only callers with an invoker token (berth access) get through, from this deploy on
    expect((await berth(['deploy', '--host', host, '--no-build', '--private', '--public'])).code).toBe(2);
    const priv = await berth(['deploy', '--host', host, '--no-build', '--private']);
    expect(priv.code, priv.out + priv.err).toBe(0);
    expect(priv.err).toContain('is private');
    expect((await viaProxy(host, '/www/index.html')).status).toBe(401);
    const access = JSON.parse((await berth(['access', host, '--add-invoker', 'e2e', '--json'])).out);
    const withToken = async () => {
      const r = await request(`${h.proxyUrl}/www/index.html`, { headers: { host, authorization: `Bearer ${access.created.token}` } });
      return { status: r.statusCode, body: (await r.body.text()).trim() };
    };
    await waitFor('the proxies have the token', async () => (await withToken()).status === 200, 10_000);
    expect(await withToken()).toEqual({ status: 200, body: 'ok' });
    expect((await berth(['delete', host, '--yes'])).code).toBe(0);
  }, 120_000);

  it('deploy of an app deleted while it builds says so', async () => {
    const app = join(tmp.dir, 'doomed');
    await mkdir(app, { recursive: true });
    await writeFile(join(app, 'Dockerfile'), `FROM ${BASE_IMAGE}\nRUN sleep 4\nCMD ["sh", "-c", "exec httpd -f -p $PORT"]\n`);
    const deploying = berth(['deploy', app, '--host', 'cli-doomed.localhost']);
    await waitFor('building', async () => (await h.cp.db.query(`SELECT 1 FROM images WHERE app_hostname = 'cli-doomed.localhost' AND status = 'building'`)).rows.length > 0, 30_000, 50);
    expect((await berth(['delete', 'cli-doomed.localhost', '--yes'])).code).toBe(0);
    const r = await deploying;
    expect([r.code, r.err]).toEqual([1, expect.stringMatching(/berth deploy: image \d+ of cli-doomed\.localhost is gone: it, or its app, was deleted while it deployed\n$/)]);
  }, 120_000);

  it('delete: needs --yes off a terminal, then drains and removes a running app; its URL stops answering', async () => {
    const app = join(tmp.dir, 'bye');
    await writeApp(app, 'bye\n');
    const d = await berth(['deploy', app, '--host', 'cli-bye.localhost']);
    expect(d.code, d.out + d.err).toBe(0);
    expect(await viaProxy('cli-bye.localhost', '/www/index.html')).toEqual({ status: 200, body: 'bye' });
    const ids = (await h.cp.db.query<{ docker_id: string }>(
      `SELECT c.docker_id FROM containers c JOIN images i ON i.id = c.image_id WHERE i.app_hostname = 'cli-bye.localhost' AND c.docker_id IS NOT NULL`)).rows.map((r) => r.docker_id);
    expect(ids.length).toBeGreaterThan(0);

    const asked = await berth(['delete', 'cli-bye.localhost']);
    expect(asked.code).toBe(2);
    expect(asked.err).toContain('without --yes');
    expect(await viaProxy('cli-bye.localhost', '/www/index.html')).toEqual({ status: 200, body: 'bye' });
    expect((await berth(['delete', 'not an app', '--yes'])).code).toBe(2);
    expect((await berth(['delete', 'nobody.localhost', '--yes'])).code).toBe(1);

    const r = await berth(['delete', 'cli-bye.localhost', '--yes', '--json']);
    expect(r.code, r.out + r.err).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ deleted: 'cli-bye.localhost', revisions: [1], instances: 1 });
    expect((await viaProxy('cli-bye.localhost', '/www/index.html')).status).not.toBe(200);
    const apps = JSON.parse((await berth(['apps', '--json'])).out) as { apps: { app_hostname: string }[] };
    expect(apps.apps.map((a) => a.app_hostname)).not.toContain('cli-bye.localhost');
    for (const id of ids) expect(await docker.getContainer(id).inspect().then(() => 'exists', () => 'gone')).toBe('gone');
  }, 120_000);

  it('logout revokes the stored token and forgets it', async () => {
    const creds = JSON.parse(await readFile(join(tmp.dir, 'config', 'credentials.json'), 'utf8'));
    const token = creds.apis[h.cp.url].token as string;
    const r = await berth(['logout']);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`Logged out of ${h.cp.url}`);
    expect((await fetch(`${h.cp.url}/api/auth/me`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
    expect((await berth(['apps'])).code).toBe(3);
  });

  it('login on a terminal asks for the email and the password, and does not echo the password', async () => {
    const child = spawn('script', ['-qfec', `${process.execPath} ${BIN} login`, '/dev/null'], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    await waitFor('the email question', async () => out.includes('Email for '), 10_000, 50);
    child.stdin.write('example@gmail.com\r');
    await waitFor('the password question', async () => out.includes('Password: '), 10_000, 50);
    child.stdin.write('example123\r');
    await waitFor('the login', async () => out.includes('Logged in'), 10_000, 50);
    child.stdin.end();
    expect(await exited).toBe(0);
    expect(out).toContain('example@gmail.com'); // typed text is echoed...
    expect(out).not.toContain('example123'); // ...the password is not
  });
});
