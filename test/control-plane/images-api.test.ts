import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { request as httpRequest, type ClientRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../control-plane/app.js';
import { Api } from '../helpers/api.js';
import { appFiles, makeTar, makeTgz, makeZip } from '../helpers/archives.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * The image API without a Docker daemon: this control plane points at a socket that does not
 * exist, so every build fails fast with a clear message — which is itself under test.
 */
let pg: TestPostgres;
let cp: ControlPlane;
let api: Api;
let alice: Api;
let bob: Api;
let data: { dir: string; cleanup(): Promise<void> };
let app: Buffer;
let seq = 0;
const host = () => `app${++seq}.example.com`;

beforeAll(async () => {
  pg = await startTestPostgres();
  data = await tempDir();
  cp = await startControlPlane({
    port: 0, dataDir: data.dir, databaseUrl: await pg.createDatabase(), quiet: true, seedDefaultUser: false,
    dockerHost: 'unix:///nonexistent/docker.sock', maxUploadBytes: 64 * 1024, maxArchiveEntries: 100, maxArchiveBytes: 256 * 1024,
    // uploads here outpace the failing builds; the per-user build quota has its own test (test/security/tenant-quotas.test.ts)
    quotas: { builds: 100 },
  });
  api = new Api(cp.url);
  alice = await api.signup('alice@example.com');
  bob = await api.signup('bob@example.com');
  app = await makeTar(appFiles());
});

afterAll(async () => {
  await cp?.close();
  await pg?.stop();
  await data?.cleanup();
});

describe('upload validation', () => {
  it('needs authentication', async () => {
    const r = await api.upload({ name: 'x', app_hostname: host() }, app);
    expect(r.status).toBe(401);
  });

  it('accepts a valid upload: 201 building, normalised hostname, parsed limits, Docker tag', async () => {
    const r = await alice.upload({
      name: 'shop', tag: 'v1', app_hostname: 'https://Shop.Example.COM:8443/', container_port: 3000,
      min_instances: 1, max_instances: 3, cpu_limit: '0.5', memory_limit: '512m',
    }, app, 'whatever.bin');
    expect(r.status, r.text).toBe(201);
    expect(r.body).toMatchObject({
      name: 'shop', tag: 'v1', app_hostname: 'shop.example.com', container_port: 3000, min_instances: 1, max_instances: 3,
      cpu_limit: 0.5, memory_limit: '512m', memory_limit_bytes: 512 * 1024 * 1024, status: 'building',
    });
    expect(r.body.docker_image).toMatch(new RegExp(`^berth-u${r.body.user_id}-i${r.body.id}-c[0-9a-f]{12}:v1$`));
    expect(existsSync(join(data.dir, 'builds', String(r.body.user_id), String(r.body.id), 'context', 'Dockerfile'))).toBe(true);
    // uploads are not kept once extracted
    expect(await readdir(join(data.dir, 'uploads'))).toEqual([]);
  });

  it('defaults: tag latest, port 8080, 1 instance; cpu in millicores, memory in Mi/G', async () => {
    const r = await alice.upload({ name: 'defaults', app_hostname: host(), cpu_limit: '250m', memory_limit: '1.5G' }, app);
    expect(r.status, r.text).toBe(201);
    expect(r.body).toMatchObject({ tag: 'latest', container_port: 8080, min_instances: 1, max_instances: 1, cpu_limit: 0.25, memory_limit_bytes: 1.5 * 1024 ** 3 });
  });

  const bad: [string, Record<string, string | number>, RegExp][] = [
    ['missing name', { app_hostname: 'x1.example.com' }, /"name" is required/],
    ['missing app_hostname', { name: 'a' }, /"app_hostname" is required/],
    ['unknown field', { name: 'a', app_hostname: 'x2.example.com', evil: 1 }, /unknown field "evil"/],
    ['upper-case name', { name: 'MyApp', app_hostname: 'x3.example.com' }, /"name" must be lower-case/],
    ['name with slash', { name: 'a/b', app_hostname: 'x4.example.com' }, /"name"/],
    ['tag with colon', { name: 'a', tag: 'v1:evil', app_hostname: 'x5.example.com' }, /"tag" must be/],
    ['tag starting with dot', { name: 'a', tag: '.hidden', app_hostname: 'x6.example.com' }, /"tag"/],
    ['bad hostname', { name: 'a', app_hostname: 'not a host!' }, /"app_hostname"/],
    ['empty hostname after normalising', { name: 'a', app_hostname: 'https://' }, /"app_hostname"/],
    ['a wildcard hostname', { name: 'a', app_hostname: '*.com' }, /"app_hostname": "\*\.com" is a wildcard/],
    ['a wildcard under a domain', { name: 'a', app_hostname: '*.shop.example.com' }, /"app_hostname": .* is a wildcard/],
    ['a single-label hostname', { name: 'a', app_hostname: 'com' }, /"app_hostname": "com" has a single label/],
    ['localhost', { name: 'a', app_hostname: 'http://LOCALHOST:8080/' }, /"app_hostname": "localhost" is the loopback name/],
    ['an IPv4 literal', { name: 'a', app_hostname: '127.0.0.1' }, /"app_hostname": "127.0.0.1" is an IP address/],
    ['an IPv6 literal', { name: 'a', app_hostname: '[::1]' }, /"app_hostname": "\[::1\]" is an IP address/],
    ['a numeric last label', { name: 'a', app_hostname: '10.0.0.300' }, /"app_hostname": "10.0.0.300" ends in a numeric label/],
    ['an underscore', { name: 'a', app_hostname: 'b_b.localhost' }, /"app_hostname": "b_b.localhost" has "_", which no hostname may have/],
    ['a lookalike (Cyrillic о in a Latin name)', { name: 'a', app_hostname: 'bоb.localhost' }, /"app_hostname": "xn--bb-fmc.localhost" mixes Latin, Cyrillic or Greek letters in "bоb"/],
    ['port 0', { name: 'a', app_hostname: 'x7.example.com', container_port: 0 }, /"container_port" must be >= 1/],
    ['port 65536', { name: 'a', app_hostname: 'x8.example.com', container_port: 65536 }, /"container_port" must be <= 65535/],
    ['port not a number', { name: 'a', app_hostname: 'x9.example.com', container_port: 'http' }, /"container_port" must be integer/],
    ['min > max', { name: 'a', app_hostname: 'x10.example.com', min_instances: 3, max_instances: 2 }, /min_instances \(3\) must not exceed max_instances \(2\)/],
    ['negative min', { name: 'a', app_hostname: 'x11.example.com', min_instances: -1 }, /"min_instances"/],
    ['cpu garbage', { name: 'a', app_hostname: 'x12.example.com', cpu_limit: 'lots' }, /"cpu_limit" must be a number of CPUs/],
    ['cpu zero', { name: 'a', app_hostname: 'x13.example.com', cpu_limit: '0' }, /"cpu_limit": "0" must be between/],
    ['memory garbage', { name: 'a', app_hostname: 'x14.example.com', memory_limit: '12 parsecs' }, /"memory_limit" must be a size/],
    ['memory too small', { name: 'a', app_hostname: 'x15.example.com', memory_limit: '1k' }, /"memory_limit": "1k" must be between/],
  ];
  for (const [label, fields, msg] of bad) {
    it(`400 for ${label}`, async () => {
      const r = await alice.upload(fields, app);
      expect(r.status, r.text).toBe(400);
      expect(r.body.error.code).toBe('invalid_request');
      expect(r.body.error.message).toMatch(msg);
    });
  }

  it('a name under localhost is a fine app_hostname (the walkthrough uses hello.localhost)', async () => {
    const r = await alice.upload({ name: 'local', app_hostname: 'walkthrough.localhost' }, app);
    expect(r.status, r.text).toBe(201);
  });

  it('400 without a file; 415 when not multipart; 400 for a second file or a misnamed file', async () => {
    const r = await alice.upload({ name: 'nofile', app_hostname: host() });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/"file" is required/);
    const j = await alice.post('/api/images', { name: 'x' });
    expect(j.status).toBe(415);
    const form = new FormData();
    form.append('name', 'two');
    form.append('app_hostname', host());
    form.append('file', new Blob([new Uint8Array(app)]), 'a.tar');
    form.append('file', new Blob([new Uint8Array(app)]), 'b.tar');
    expect((await alice.req('POST', '/api/images', { body: form })).status).toBe(400);
    const misnamed = new FormData();
    misnamed.append('name', 'mis');
    misnamed.append('app_hostname', host());
    misnamed.append('source', new Blob([new Uint8Array(app)]), 'a.tar');
    const m = await alice.req('POST', '/api/images', { body: misnamed });
    expect(m.status).toBe(400);
    expect(m.body.error.message).toMatch(/"source"/);
  });

  it('413 past the upload size limit, nothing left on disk', async () => {
    const big = await makeTar([...appFiles(), { name: 'big.bin', content: Buffer.alloc(200 * 1024, 1) }]);
    const r = await alice.upload({ name: 'big', app_hostname: host() }, big);
    expect(r.status).toBe(413);
    expect(r.body.error.code).toBe('payload_too_large');
    expect(await readdir(join(data.dir, 'uploads'))).toEqual([]);
  });

  it('400 for archive attacks, naming the entry; nothing is stored', async () => {
    const before = (await alice.get('/api/images')).body.images.length;
    const cases: [Buffer, RegExp][] = [
      [await makeTar([...appFiles(), { name: '../../etc/cron.d/evil', content: 'x' }]), /"\.\.\/\.\.\/etc\/cron.d\/evil"/],
      [makeZip([{ name: 'Dockerfile', content: 'FROM x' }, { name: '/etc/passwd', content: 'x' }]), /"\/etc\/passwd": absolute path/],
      [await makeTgz([...appFiles(), { name: 'www/root', type: 'symlink', linkname: '/' }]), /"www\/root": link to absolute path/],
      [await makeTar([...appFiles(), { name: 'shadow', type: 'link', linkname: '/etc/shadow' }]), /"shadow": hard link/],
      [await makeTar([...appFiles(), { name: 'dev/sda', type: 'block-device' }]), /"dev\/sda": device files/],
      [await makeTar(Array.from({ length: 101 }, (_, i) => ({ name: `f${i}`, content: '' }))), /more than 100 entries/],
      [makeZip([{ name: 'Dockerfile', content: 'FROM x' }, { name: 'bomb', content: Buffer.alloc(4 * 1024 * 1024), deflate: true }]), /"bomb": archive expands to more than/],
      [Buffer.from('%PDF-1.4 not an archive at all'), /not a zip, tar or tar.gz/],
      // a gzip bomb of zero blocks: 4 KiB uploaded, 4 MiB inflated, far past maxArchiveBytes
      [gzipSync(Buffer.concat([await makeTar(appFiles()), Buffer.alloc(4 * 1024 * 1024)])), /archive expands to more than \d+ bytes of tar data/],
    ];
    for (const [buf, msg] of cases) {
      const r = await alice.upload({ name: 'attack', app_hostname: host() }, buf);
      expect(r.status, r.text).toBe(400);
      expect(r.body.error.code).toBe('invalid_archive');
      expect(r.body.error.message).toMatch(msg);
    }
    expect((await alice.get('/api/images')).body.images.length).toBe(before);
    const userDir = join(data.dir, 'builds', String((await alice.get('/api/auth/me')).body.user.id));
    if (existsSync(userDir)) expect((await readdir(userDir)).filter((n) => n.startsWith('.staging'))).toEqual([]);
  });

  it('400 when the Dockerfile is not at the root (or is not a regular file)', async () => {
    const nested = await makeTar([{ name: 'src/Dockerfile', content: 'FROM x' }]);
    const r = await alice.upload({ name: 'nodf', app_hostname: host() }, nested);
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('dockerfile_missing');
    const linked = await makeTar([{ name: 'real', content: 'FROM x' }, { name: 'Dockerfile', type: 'symlink', linkname: 'real' }]);
    expect((await alice.upload({ name: 'nodf', app_hostname: host() }, linked)).body.error.code).toBe('dockerfile_missing');
  });

  it('revision fields: a bad traffic_tag or no_traffic is a 400 naming it; a hostname shaped like a tag URL is refused', async () => {
    const tag = await alice.upload({ name: 'tagged', app_hostname: host(), traffic_tag: 'Bad--Tag' }, app);
    expect(tag.status).toBe(400);
    expect(tag.body.error.message).toMatch(/traffic_tag/);
    const long = await alice.upload({ name: 'tagged', app_hostname: host(), traffic_tag: 'x'.repeat(61) }, app);
    expect(long.status).toBe(400);
    const nt = await alice.upload({ name: 'tagged', app_hostname: host(), no_traffic: 'maybe' }, app);
    expect(nt.status).toBe(400);
    expect(nt.body.error.message).toMatch(/no_traffic/);
    const dashes = await alice.upload({ name: 'tagged', app_hostname: 'canary---shop.example.com' }, app);
    expect(dashes.status).toBe(400);
    expect(dashes.body.error.message).toMatch(/reserved for revision tag URLs/);
  });

  it('one user has at most two uploads in progress (429 too_many_uploads); another user is not held up', async () => {
    const carol = await api.signup('carol-uploads@example.com');
    const u = new URL(cp.url);
    const boundary = 'xBOUNDARYx';
    // two uploads that send their head and a little of the file, then stall
    const answered: number[] = [];
    const stalled = await Promise.all([1, 2].map(() => new Promise<ClientRequest>((resolve) => {
      const req = httpRequest({ host: u.hostname, port: u.port, method: 'POST', path: '/api/images',
        headers: { authorization: `Bearer ${carol.token}`, 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': '60000' } });
      req.on('error', () => {});
      req.on('response', (res) => answered.push(res.statusCode ?? 0));
      req.write(`--${boundary}\r\ncontent-disposition: form-data; name="app_hostname"\r\n\r\n${host()}\r\n--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="a.tar"\r\ncontent-type: application/octet-stream\r\n\r\n`);
      req.write(Buffer.alloc(1000));
      resolve(req);
    })));
    try {
      // both are being received: their files are on disk (the handler counted them first)
      const receiving = async () => (await readdir(join(data.dir, 'uploads'))).filter((f) => f.endsWith('.upload')).length;
      for (let i = 0; i < 200 && (await receiving()) < 2; i++) await new Promise((r) => setTimeout(r, 50));
      expect(await receiving()).toBe(2);
      expect(answered).toEqual([]);
      const third = await carol.upload({ name: 'third', app_hostname: host() }, app);
      expect(third.status, third.text).toBe(429);
      expect(third.body.error).toMatchObject({ code: 'too_many_uploads', message: expect.stringMatching(/2 uploads in progress/) });
      expect(third.headers.get('retry-after')).toBe('5');
      // another user is not held up
      expect((await bob.upload({ name: 'other', app_hostname: host() }, app)).status).toBe(201);
    } finally {
      for (const r of stalled) r.destroy();
    }
    // the stalled ones end (their sockets closed): the slots free
    let again = await carol.upload({ name: 'again', app_hostname: host() }, app);
    for (let i = 0; i < 100 && again.status === 429; i++) {
      await new Promise((r) => setTimeout(r, 100));
      again = await carol.upload({ name: 'again', app_hostname: host() }, app);
    }
    expect(again.status, again.text).toBe(201);
  });

  it('app_hostname is unique across users after normalisation (409)', async () => {
    expect((await alice.upload({ name: 'uniq', app_hostname: 'unique.example.com' }, app)).status).toBe(201);
    const r = await bob.upload({ name: 'uniq', app_hostname: 'UNIQUE.example.com.' }, app);
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe('hostname_taken');
    // concurrent uploads of one new hostname: exactly one wins
    const both = await Promise.all([alice.upload({ name: 'race', app_hostname: 'race.example.com' }, app), bob.upload({ name: 'race', app_hostname: 'race.example.com' }, app)]);
    expect(both.map((x) => x.status).sort()).toEqual([201, 409]);
  });
});

describe('builds without a reachable Docker daemon', () => {
  it('fail quickly with a clear message in status_reason and logs', async () => {
    const r = await alice.upload({ name: 'nodocker', app_hostname: host() }, app);
    const t0 = Date.now();
    const img = await alice.waitForBuild(r.body.id, 20_000);
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(img.status).toBe('build_failed');
    expect(img.status_reason).toMatch(/Docker daemon unreachable at unix:\/\/\/nonexistent\/docker.sock/);
    const logs = await alice.get(`/api/images/${r.body.id}/build-logs`);
    expect(logs.body.logs).toMatch(/BUILD FAILED: Docker daemon unreachable/);
    const m = await api.req('GET', '/metrics', { token: cp.metricsToken });
    expect(m.text).toMatch(/berth_cp_builds_total\{result="build_failed"\} \d+/);
  });
});

describe('isolation between users', () => {
  it("another user's image answers 404 everywhere and never appears in lists", async () => {
    const r = await alice.upload({ name: 'private', app_hostname: host() }, app);
    const id = r.body.id;
    await alice.waitForBuild(id, 20_000);
    for (const path of [`/api/images/${id}`, `/api/images/${id}/build-logs`, `/api/images/${id}/build-logs?follow=1`, `/api/images/${id}/containers`]) {
      const x = await bob.get(path);
      expect(x.status, path).toBe(404);
      expect(x.body.error.code).toBe('not_found');
      expect(x.text).not.toContain('private');
    }
    expect((await bob.del(`/api/images/${id}`)).status).toBe(404);
    expect((await alice.get(`/api/images/${id}`)).status).toBe(200);
    expect((await bob.get('/api/images')).body.images.map((i: { id: number }) => i.id)).not.toContain(id);
    expect((await bob.get('/api/images/with-containers')).body.images.map((i: { id: number }) => i.id)).not.toContain(id);
    const bobEvents = (await bob.get('/api/events')).body.events;
    expect(bobEvents.every((e: { image_id: number }) => e.image_id !== id)).toBe(true);
    expect((await bob.get('/api/images/999999')).status).toBe(404);
    expect((await bob.get('/api/images/abc')).status).toBe(400);
  });
});

describe('listing, events, deletion', () => {
  it('with-containers embeds containers; DELETE is 409 while containers exist, then 204 with an event', async () => {
    const r = await alice.upload({ name: 'del', app_hostname: 'del.example.com' }, app);
    const id = r.body.id;
    await alice.waitForBuild(id, 20_000);
    const me = (await alice.get('/api/auth/me')).body.user;
    await cp.db.query(`INSERT INTO containers (user_id, image_id, status, internal_port) VALUES ($1, $2, 'running', 8080)`, [me.id, id]);
    const wc = (await alice.get('/api/images/with-containers')).body.images.find((i: { id: number }) => i.id === id);
    expect(wc.containers).toHaveLength(1);
    expect(wc.containers[0]).toMatchObject({ image_id: id, status: 'running', internal_port: 8080 });
    expect((await alice.get(`/api/images/${id}/containers`)).body.containers).toHaveLength(1);
    const conflict = await alice.del(`/api/images/${id}`);
    expect(conflict.status).toBe(409);
    expect(conflict.body.error.code).toBe('image_in_use');
    await cp.db.query('DELETE FROM containers WHERE image_id = $1', [id]);
    expect((await alice.del(`/api/images/${id}`)).status).toBe(204);
    expect((await alice.get(`/api/images/${id}`)).status).toBe(404);
    expect(existsSync(join(data.dir, 'builds', String(me.id), String(id)))).toBe(false);
    // the hostname stays alice's a while (BERTH_HOSTNAME_HOLD_DAYS): bob cannot take it, she can
    const squat = await bob.upload({ name: 'del', app_hostname: 'del.example.com' }, app);
    expect(squat.status).toBe(409);
    expect(squat.body.error.code).toBe('hostname_held');
    const back = await alice.upload({ name: 'del', app_hostname: 'del.example.com' }, app);
    expect(back.status).toBe(201);

    const ev = (await alice.get('/api/events?after=0&limit=1000')).body.events.filter((e: { image_id: number }) => e.image_id === id);
    expect(ev.map((e: { type: string }) => e.type)).toEqual(['image.building', 'image.build_failed', 'image.deleted']);
    expect(ev.every((e: { app_hostname: string; user_id: number }) => e.app_hostname === 'del.example.com' && e.user_id === me.id)).toBe(true);
  });

  it('DELETE of a built image deletes the row with its event even when Docker cannot remove the image', async () => {
    const r = await alice.upload({ name: 'gone', app_hostname: host() }, app);
    const id = r.body.id;
    await alice.waitForBuild(id, 20_000);
    // as if it had built: Docker (unreachable here) would have to remove the image
    await cp.db.query(`UPDATE images SET status = 'ready', docker_image_id = 'sha256:feed' WHERE id = $1`, [id]);
    const del = await alice.del(`/api/images/${id}`);
    expect(del.status, del.text).toBe(204);
    expect((await alice.get(`/api/images/${id}`)).status).toBe(404);
    const { rows } = await cp.db.query('SELECT type FROM events WHERE image_id = $1 ORDER BY id', [id]);
    expect(rows.map((e: { type: string }) => e.type)).toEqual(['image.building', 'image.build_failed', 'image.deleted']);
    expect(existsSync(join(data.dir, 'builds', String(r.body.user_id), String(id)))).toBe(false);
    // another user's image, and a second delete, answer 404
    expect((await alice.del(`/api/images/${id}`)).status).toBe(404);
  });

  it('events paginate with after= and are delivered to in-process subscribers', async () => {
    const seen: string[] = [];
    const unsubscribe = cp.events.subscribe((e) => { seen.push(`${e.type}:${e.image_id}`); });
    const r = await alice.upload({ name: 'ev', app_hostname: host() }, app);
    await alice.waitForBuild(r.body.id, 20_000);
    const all = (await alice.get('/api/events')).body;
    const last = all.next_after;
    expect(last).toBeGreaterThan(0);
    const page = await alice.get(`/api/events?after=${last - 1}`);
    expect(page.body.events).toHaveLength(1);
    expect(page.body.events[0].id).toBe(last);
    expect((await alice.get(`/api/events?after=${last}`)).body.events).toEqual([]);
    expect((await alice.get('/api/events?after=-1')).status).toBe(400);
    const deadline = Date.now() + 5000;
    while (!seen.includes(`image.build_failed:${r.body.id}`) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    unsubscribe();
    expect(seen).toContain(`image.building:${r.body.id}`);
    expect(seen).toContain(`image.build_failed:${r.body.id}`);
    const { rows } = await cp.db.query('SELECT count(*)::int AS n FROM events WHERE image_id = $1 AND published_at IS NULL', [r.body.id]);
    expect(rows[0].n).toBe(0);
  });
});

describe('start', () => {
  it('removes uploads and staging dirs left by a process that died mid-request', async () => {
    const d = await tempDir();
    const { mkdir, writeFile } = await import('node:fs/promises');
    await mkdir(join(d.dir, 'uploads'), { recursive: true });
    await writeFile(join(d.dir, 'uploads', 'dead.upload'), 'x');
    await mkdir(join(d.dir, 'builds', '1', '.staging-dead', 'context'), { recursive: true });
    await mkdir(join(d.dir, 'builds', '1', '5', 'context'), { recursive: true });
    const own = await startControlPlane({ port: 0, dataDir: d.dir, databaseUrl: await pg.createDatabase(), quiet: true, seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
    try {
      expect(await readdir(join(d.dir, 'uploads'))).toEqual([]);
      expect(await readdir(join(d.dir, 'builds', '1'))).toEqual(['5']); // real build dirs are left alone
    } finally {
      await own.close();
      await d.cleanup();
    }
  });
});

describe('shutdown', () => {
  it('close() ends ?follow=1 log streams instead of waiting for their builds', async () => {
    const d = await tempDir();
    const own = await startControlPlane({
      port: 0, dataDir: d.dir, databaseUrl: await pg.createDatabase(), quiet: true, seedDefaultUser: false,
      dockerHost: 'unix:///nonexistent/docker.sock',
    });
    let closed = false;
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    try {
      const carl = await new Api(own.url).signup('carl@example.com');
      const r = await carl.upload({ name: 'follow', app_hostname: host() }, app);
      expect(r.status, r.text).toBe(201);
      await carl.waitForBuild(r.body.id, 20_000);
      // as if another process were still building it: the stream polls and stays open
      await own.db.query(`UPDATE images SET status = 'building' WHERE id = $1`, [r.body.id]);
      const res = await fetch(`${own.url}/api/images/${r.body.id}/build-logs?follow=1`, { headers: { authorization: `Bearer ${carl.token}` } });
      expect(res.status).toBe(200);
      reader = res.body!.getReader();
      expect(new TextDecoder().decode((await reader.read()).value)).toContain('event: log');
      const rest = (async () => { let text = ''; for (;;) { const c = await reader!.read(); if (c.done) return text; text += new TextDecoder().decode(c.value); } })();
      const started = Date.now();
      const closing = own.close().then(() => { closed = true; });
      await Promise.race([closing, new Promise((res) => setTimeout(res, 8000))]);
      expect(closed, 'close() did not resolve within 8 s').toBe(true);
      expect(Date.now() - started).toBeLessThan(5000);
      expect(await rest).not.toContain('event: end'); // ended, not finished: a client reconnects
    } finally {
      if (!closed) { await reader?.cancel().catch(() => {}); await own.close().catch(() => {}); }
      await d.cleanup();
    }
  }, 30_000);
});
