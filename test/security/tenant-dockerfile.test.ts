import { gzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/api.js';
import { appFiles, makeTar } from '../helpers/archives.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { describeWithDocker, docker, removeClusterContainers } from '../helpers/docker.js';
import { removeNetworks, uniqueNetworks } from './tenant-support.js';

/**
 * Builds may not fetch URLs through the daemon nor name another user's images (DESIGN.md
 * "Security model"). The upload is refused with 400 `dockerfile_refused` naming the line; an
 * image that reaches another user's image under another name fails its build.
 */
let seq = 0;
const host = () => `df${++seq}-${process.pid}.example.com`;
const dockerfile = (text: string) => makeTar([{ name: 'Dockerfile', content: text }, { name: 'www/index.html', content: 'x\n' }]);

function expectRefused(r: { status: number; body: any; text: string }, line: number, pattern: RegExp) {
  expect(r.status, r.text).toBe(400);
  expect(r.body.error.code).toBe('dockerfile_refused');
  expect(r.body.error.requestId).toBeTruthy();
  expect(r.body.error.message).toContain(`line ${line}`);
  expect(r.body.error.message).toMatch(pattern);
}

describe('upload: the Dockerfile policy (no Docker needed)', () => {
  let t: TestControlPlane;
  let alice: Api;
  let bob: Api;
  let bobId = 0;

  beforeAll(async () => {
    t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
    const api = new Api(t.cp.url);
    alice = await api.signup('df-alice@example.com');
    bob = await api.signup('df-bob@example.com');
    bobId = (await bob.get('/api/auth/me')).body.user.id;
  });
  afterAll(async () => { await t?.close(); });

  it("ADD <url> of the control plane's /metrics is refused, naming the line", async () => {
    const r = await alice.upload({ name: 'steal', app_hostname: host() }, await dockerfile(`FROM berth-test/busybox:1\n\nADD ${t.cp.url}/metrics /m\n`));
    expectRefused(r, 3, /ADD of a URL/);
    expect((await alice.get('/api/images')).body.images).toHaveLength(0);
  });

  it('ADD of the proxy admin route table, spelled every which way', async () => {
    const cases: [string, number][] = [
      ['FROM berth-test/busybox:1\nadd --chmod=644 http://127.0.0.1:9901/routes /r\n', 2],
      ['FROM berth-test/busybox:1\nADD ["http://127.0.0.1:9901/routes", "/r"]\n', 2],
      ['FROM berth-test/busybox:1\nRUN true\nADD \\\n  http://127.0.0.1:9901/routes \\\n  /r\n', 3],
      ['# escape=`\nFROM berth-test/busybox:1\nADD `\n http://127.0.0.1:9901/routes /r\n', 3],
      ['FROM berth-test/busybox:1\nARG U=http://127.0.0.1:9901/routes\nADD $U /r\n', 3],
      ['FROM berth-test/busybox:1\nADD git@github.com:x/y.git /src\n', 2],
    ];
    for (const [df, line] of cases) expectRefused(await alice.upload({ name: 'steal', app_hostname: host() }, await dockerfile(df)), line, /ADD of a URL or git/);
  });

  it("FROM / COPY --from / RUN --mount naming another user's berth image are refused", async () => {
    const other = `berth-u${bobId}-i1:latest`;
    const cases: [string, number][] = [
      [`FROM ${other}\n`, 1],
      [`ARG BASE=${other}\nFROM \${BASE}\n`, 2],
      [`ARG B\nFROM \${B:-${other}}\n`, 2],
      [`FROM berth-test/busybox:1\nCOPY --from=${other} /secret /s\n`, 2],
      [`FROM berth-test/busybox:1\nRUN --mount=type=bind,from=${other},target=/x cat /x/secret\n`, 2],
      [`FROM docker.io/library/BERTH-U${bobId}-I1\n`, 1],
    ];
    for (const [df, line] of cases) expectRefused(await alice.upload({ name: 'steal', app_hostname: host() }, await dockerfile(df)), line, /another user's image/);
  });

  it('image ids and unresolvable references are refused', async () => {
    expectRefused(await alice.upload({ name: 'x', app_hostname: host() }, await dockerfile(`FROM sha256:${'a'.repeat(64)}\n`)), 1, /image id/);
    expectRefused(await alice.upload({ name: 'x', app_hostname: host() }, await dockerfile('FROM 2bf31ee4\n')), 1, /image id/);
    expectRefused(await alice.upload({ name: 'x', app_hostname: host() }, await dockerfile('ARG BASE\nFROM $BASE\n')), 2, /cannot be resolved/);
  });

  it('stage names, stage indexes and the own berth images are accepted', async () => {
    const me = (await alice.get('/api/auth/me')).body.user.id;
    const df = `FROM berth-test/busybox:1 AS build\nRUN echo hi > /out\nFROM berth-u${me}-i99:latest\nCOPY --from=build /out /a\nCOPY --from=0 /out /b\n`;
    const r = await alice.upload({ name: 'ok', app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await dockerfile(df));
    expect(r.status, r.text).toBe(201);
  });
});

const nets = uniqueNetworks();
await describeWithDocker("builds cannot read another user's image", () => {
  let t: TestControlPlane;
  let alice: Api;
  let bob: Api;
  let bobImage: any;
  const refs: string[] = [];
  const alias = `berth-test/alias-${process.pid}:1`;

  beforeAll(async () => {
    t = await startTestControlPlane({ seedDefaultUser: false, ...nets });
    const api = new Api(t.cp.url);
    alice = await api.signup('img-alice@example.com');
    bob = await api.signup('img-bob@example.com');
    const up = await bob.upload({ name: 'secret', app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await makeTar([
      { name: 'Dockerfile', content: 'FROM berth-test/busybox:1\nCOPY secret.txt /secret.txt\n' },
      { name: 'secret.txt', content: 'bob-database-password\n' },
    ]));
    expect(up.status, up.text).toBe(201);
    refs.push(up.body.docker_image);
    bobImage = await bob.waitForBuild(up.body.id, 90_000);
    expect(bobImage.status, bobImage.status_reason).toBe('ready');
  });

  afterAll(async () => {
    const cluster = t?.cp.app.platform.clusterId;
    await t?.close();
    if (cluster) await removeClusterContainers(cluster);
    await docker.getImage(alias).remove().catch(() => {});
    for (const ref of [...refs].reverse()) await docker.getImage(ref).remove({ force: true }).catch(() => {}); // children first
    await removeNetworks([nets.appNetwork, nets.buildNetwork]);
  });

  it("FROM bob's image by its tag is refused at upload; bob's secret never reaches alice's build", async () => {
    const r = await alice.upload({ name: 'steal', app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await dockerfile(`FROM ${bobImage.docker_image}\nRUN cat /secret.txt\n`));
    expectRefused(r, 1, /another user's image/);
  });

  it("no layer cache is shared: alice cannot confirm a guess at bob's file by building the same steps", async () => {
    const r = await alice.upload({ name: 'guess', app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await makeTar([
      { name: 'Dockerfile', content: 'FROM berth-test/busybox:1\nCOPY secret.txt /secret.txt\n' },
      { name: 'secret.txt', content: 'bob-database-password\n' },
    ]));
    expect(r.status, r.text).toBe(201);
    refs.push(r.body.docker_image);
    const img = await alice.waitForBuild(r.body.id, 90_000);
    expect(img.status, img.status_reason).toBe('ready');
    const logs = (await alice.get(`/api/images/${img.id}/build-logs`)).body.logs as string;
    expect(logs).toMatch(/^Step 2\/\d+ : COPY secret.txt/m);
    expect(logs).not.toContain('Using cache');
  });

  it("an image that is bob's under another name (an operator's tag) fails alice's build", async () => {
    await docker.getImage(bobImage.docker_image_id).tag({ repo: alias.split(':')[0], tag: '1' });
    const r = await alice.upload({ name: 'alias', app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await dockerfile(`FROM ${alias}\nRUN cat /secret.txt\n`));
    expect(r.status, r.text).toBe(201);
    refs.push(r.body.docker_image);
    const img = await alice.waitForBuild(r.body.id, 90_000);
    expect(img.status).toBe('build_failed');
    expect(img.status_reason).toMatch(/resolves to another user's image/);
    const logs = (await alice.get(`/api/images/${img.id}/build-logs`)).body.logs as string;
    expect(logs).not.toContain('bob-database-password');
  });

  it('a base image with ONBUILD triggers fails the build before any step runs (the policy never saw them)', async () => {
    // as one published on Docker Hub would be: its triggers read a host-only address
    const evil = `berth-test/onbuild-${Math.random().toString(36).slice(2, 8)}:1`;
    const ctx = await makeTar([{ name: 'Dockerfile', content: 'FROM berth-test/busybox:1\nONBUILD ADD http://127.0.0.1:9/loot /loot\nONBUILD RUN echo onbuild-trigger-ran\n' }]);
    const out = await docker.buildImage(Readable.from([ctx]) as unknown as NodeJS.ReadableStream, { t: evil });
    await new Promise((resolve, reject) => docker.modem.followProgress(out, (e: Error | null) => (e ? reject(e) : resolve(null))));
    refs.push(evil);
    const r = await alice.upload({ name: 'onbuild', app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await dockerfile(`FROM ${evil}\nRUN true\n`));
    expect(r.status, r.text).toBe(201);
    refs.push(r.body.docker_image);
    const img = await alice.waitForBuild(r.body.id, 90_000);
    expect(img.status).toBe('build_failed');
    expect(img.status_reason).toMatch(/has ONBUILD triggers \("ADD http:\/\/127\.0\.0\.1:9\/loot \/loot"/);
    const logs = (await alice.get(`/api/images/${img.id}/build-logs`)).body.logs as string;
    // no build step ran: no trigger's output line, no step at all
    expect(logs.split('\n')).not.toContain('onbuild-trigger-ran');
    expect(logs).not.toMatch(/^Step \d+\//m);
  });

  it('ADD of an archive fails the build before any step, however its source reaches it (the builder would unpack it unbounded); COPY of it, ADD of a directory holding it and ADD of plain files build', async () => {
    const gz = gzipSync(Buffer.alloc(4 * 1024 * 1024)); // 4 MiB of zeros in ~4 KiB
    const tar = await makeTar([{ name: 'inner.txt', content: 'x' }]);
    const files = [{ name: 'notes.txt', content: 'plain\n' }, { name: 'bomb.gz', content: gz }, { name: 'sub/dir/bundle.tar', content: tar }];
    for (const add of ['bomb.gz', './sub/dir/*.tar', '["notes.txt", "bomb.gz", "/d/"]', 'sub/../bomb.gz']) {
      const r = await alice.upload({ name: `add-${add.length}`, app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await makeTar([
        { name: 'Dockerfile', content: `FROM berth-test/busybox:1\nADD ${add.startsWith('[') ? add : `${add} /d/`}\nRUN echo step-ran\n` }, ...files,
      ]));
      expect(r.status, r.text).toBe(201);
      refs.push(r.body.docker_image);
      const img = await alice.waitForBuild(r.body.id, 90_000);
      expect(img.status, add).toBe('build_failed');
      expect(img.status_reason, add).toMatch(/^ADD(?: bomb\.gz: it is an archive|: the build context holds an archive \((?:bomb\.gz|sub\/dir\/bundle\.tar)\)), which ADD would unpack during the build, where nothing bounds what it expands to/);
      expect((await alice.get(`/api/images/${img.id}/build-logs`)).body.logs).not.toMatch(/^Step \d+\//m);
    }
    for (const step of ['COPY bomb.gz /bomb.gz', 'ADD notes.txt /notes.txt', 'ADD . /app', 'ADD sub /sub']) {
      const r = await alice.upload({ name: `ok-${step.length}`, app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await makeTar([
        { name: 'Dockerfile', content: `FROM berth-test/busybox:1\n${step}\n` }, ...files,
      ]));
      refs.push(r.body.docker_image);
      const img = await alice.waitForBuild(r.body.id, 90_000);
      expect(img.status, `${step}: ${img.status_reason}`).toBe('ready');
    }
  });

  it("the own images build, and FROM an own image works", async () => {
    const base = await alice.upload({ name: 'base', app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await makeTar(appFiles({ index: 'alice-base\n' })));
    refs.push(base.body.docker_image);
    const b = await alice.waitForBuild(base.body.id, 90_000);
    expect(b.status, b.status_reason).toBe('ready');
    const child = await alice.upload({ name: 'child', app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await dockerfile(`FROM ${b.docker_image}\nRUN cat /www/index.html\n`));
    expect(child.status, child.text).toBe(201);
    refs.push(child.body.docker_image);
    const c = await alice.waitForBuild(child.body.id, 90_000);
    expect(c.status, c.status_reason).toBe('ready');
  });
});
