import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { streamLimits } from '../../control-plane/http/stream-limits.js';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../control-plane/app.js';
import { BUILD_CGROUP_BASE, buildCgroups, parseCgroupMounts } from '../../control-plane/runtime/build-cgroup.js';
import { Api } from '../helpers/api.js';
import { appFiles, makeTar, makeTgz, makeZip } from '../helpers/archives.js';
import { describeWithDocker, docker, removeClusterContainers } from '../helpers/docker.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';
import { tempDir } from '../helpers/tmp.js';

let pg: TestPostgres;
let cp: ControlPlane;
let alice: Api;
let data: { dir: string; cleanup(): Promise<void> };
const made: string[] = [];
let seq = 0;
const host = () => `build${++seq}-${process.pid}.example.com`;

/** Where this host's pids controller is: the v1 hierarchy, else the cgroup2 root. */
function pidsHierarchy(): string {
  const m = parseCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8'));
  return (m.find((x) => x.type === 'cgroup' && x.options.includes('pids')) ?? m.find((x) => x.type === 'cgroup2'))!.path;
}

/** Parse an SSE response body into events. */
async function readSse(res: Response, onEvent?: (ev: string, data: any) => void): Promise<{ event: string; data: any }[]> {
  const out: { event: string; data: any }[] = [];
  const dec = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) !== -1) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = 'message';
      let data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data += line.slice(6);
      }
      if (!data) continue;
      const parsed = JSON.parse(data);
      out.push({ event, data: parsed });
      onEvent?.(event, parsed);
    }
  }
  return out;
}

await describeWithDocker('image builds with a real Docker daemon', () => {
  beforeAll(async () => {
    pg = await startTestPostgres();
    data = await tempDir();
    cp = await startControlPlane({ port: 0, dataDir: data.dir, databaseUrl: await pg.createDatabase(), quiet: true, seedDefaultUser: false, maxBuildLogBytes: 4096, buildMemoryBytes: 256 * 1024 * 1024, buildCpus: 0.5, buildPids: 64, buildDiskBytes: 64 * 1024 * 1024 });
    alice = await new Api(cp.url).signup('builder@example.com');
  });

  afterAll(async () => {
    const cluster = cp?.app.platform.clusterId;
    await cp?.close();
    // min_instances containers the reconcile loop started for the built images
    if (cluster) await removeClusterContainers(cluster);
    for (const ref of made) await docker.getImage(ref).remove({ force: true }).catch(() => {});
    await pg?.stop();
    await data?.cleanup();
  });

  it('builds a tar.gz upload: ready, tagged and labelled in Docker, logs stored, event written', async () => {
    const r = await alice.upload({ name: 'web', tag: 'v1', app_hostname: host() }, await makeTgz(appFiles({ extraDockerfile: 'RUN echo "marker-from-run-step"\n' })));
    expect(r.status, r.text).toBe(201);
    made.push(r.body.docker_image);
    const img = await alice.waitForBuild(r.body.id);
    expect(img.status, img.status_reason).toBe('ready');
    expect(img.docker_image_id).toMatch(/^sha256:/);
    const info = await docker.getImage(img.docker_image).inspect();
    expect(info.Id).toBe(img.docker_image_id);
    expect(info.RepoTags).toContain(img.docker_image);
    expect(img.docker_image).toMatch(new RegExp(`^berth-u${img.user_id}-i${img.id}-c[0-9a-f]{12}:v1$`));
    expect(info.Config.Labels).toMatchObject({ 'berth.managed': 'true', 'berth.user': String(img.user_id), 'berth.image': String(img.id) });
    const logs = await alice.get(`/api/images/${img.id}/build-logs`);
    expect(logs.body).toMatchObject({ image_id: img.id, status: 'ready', truncated: false });
    expect(logs.body.logs).toContain('marker-from-run-step');
    expect(logs.body.logs).toContain('Successfully tagged');
    // image.* only: the reconcile loop (issue 4) starts min_instances containers, which write container.* events
    const ev = (await alice.get('/api/events')).body.events.filter((e: any) => e.image_id === img.id && e.type.startsWith('image.'));
    expect(ev.map((e: any) => e.type)).toEqual(['image.building', 'image.ready']);
    expect(ev[1].payload.docker_image_id).toBe(img.docker_image_id);
    // the built image has what it needed: its context's disk goes back
    const ctx = join(data.dir, 'builds', String(img.user_id), String(img.id), 'context');
    for (let i = 0; i < 50 && existsSync(ctx); i++) await new Promise((res) => setTimeout(res, 100));
    expect(existsSync(ctx)).toBe(false);
  });

  it('builds zip uploads too (the format comes from the content)', async () => {
    const zip = makeZip(appFiles().filter((e) => e.type !== 'directory').map((e) => ({ name: e.name, content: e.content as string })));
    const r = await alice.upload({ name: 'zipped', app_hostname: host() }, zip, 'source.tar');
    made.push(r.body.docker_image);
    expect((await alice.waitForBuild(r.body.id)).status).toBe('ready');
  });

  it('a failing build is build_failed and its logs say why', async () => {
    const r = await alice.upload({ name: 'broken', app_hostname: host() }, await makeTar([
      { name: 'Dockerfile', content: 'FROM berth-test/busybox:1\nRUN echo "about to fail" && exit 3\n' },
    ]));
    made.push(r.body.docker_image);
    const img = await alice.waitForBuild(r.body.id);
    expect(img.status).toBe('build_failed');
    expect(img.status_reason).toMatch(/returned a non-zero code: 3/);
    const logs = (await alice.get(`/api/images/${img.id}/build-logs`)).body.logs;
    expect(logs).toContain('about to fail');
    expect(logs).toMatch(/BUILD FAILED: .*non-zero code: 3/);
    // a failed build's context stays, until its image is deleted
    expect(existsSync(join(data.dir, 'builds', String(img.user_id), String(img.id), 'context', 'Dockerfile'))).toBe(true);
    const ev = (await alice.get('/api/events')).body.events.filter((e: any) => e.image_id === img.id);
    expect(ev.map((e: any) => e.type)).toEqual(['image.building', 'image.build_failed']);
    expect(ev[1].payload.reason).toMatch(/non-zero code: 3/);

    // a Dockerfile the daemon cannot parse: its words, without the HTTP client's in front
    const typo = await alice.upload({ name: 'typo', app_hostname: host() }, await makeTar([{ name: 'Dockerfile', content: 'FROMM berth-test/busybox:1\n' }]));
    const bad = await alice.waitForBuild(typo.body.id);
    expect(bad.status).toBe('build_failed');
    expect(bad.status_reason).toMatch(/^dockerfile parse error.*unknown instruction: FROMM/i);
    expect((await alice.get(`/api/images/${bad.id}/build-logs`)).body.logs).toMatch(/BUILD FAILED: dockerfile parse error/i);
  });

  it("a failed build leaves none of its steps' images in the daemon; ids a step prints are not removed", async () => {
    const base = await docker.getImage('berth-test/busybox:1').inspect();
    const forged = base.Id.slice(7, 19);
    const r = await alice.upload({ name: 'leftovers', app_hostname: host() }, await makeTar([
      { name: 'Dockerfile', content: `FROM berth-test/busybox:1\nCOPY a /a\nRUN echo hi > /b\nENV X=1\nCOPY a /c\nRUN echo ' ---> ${forged}' && exit 4\n` },
      { name: 'a', content: 'data\n' },
    ]));
    made.push(r.body.docker_image);
    const img = await alice.waitForBuild(r.body.id);
    expect(img.status).toBe('build_failed');
    const logs = (await alice.get(`/api/images/${img.id}/build-logs`)).body.logs as string;
    const ids = [...logs.matchAll(/^ ---> ([0-9a-f]{12})$/gm)].map((m) => m[1]);
    // the base, the three steps the daemon committed (COPY, RUN, ENV, COPY: four) and the forged line
    expect(ids).toHaveLength(6);
    expect(ids[0]).toBe(forged);
    expect(ids.at(-1)).toBe(forged);
    const steps = ids.slice(1, -1);
    const exists = (id: string) => docker.getImage(id).inspect().then(() => true, () => false);
    for (const id of steps) expect(await exists(id), id).toBe(false);
    // the base image the step named is tagged: it stays
    expect(await exists(forged)).toBe(true);
  });

  it('a step that prints more made-up ids than any Dockerfile has steps does not keep the later steps\' images from being removed', async () => {
    const flood = `RUN awk 'BEGIN { for (i = 0; i < 100100; i++) printf " ---> %012x\\n", i }'`;
    const r = await alice.upload({ name: 'flood', app_hostname: host() }, await makeTar([
      { name: 'Dockerfile', content: `FROM berth-test/busybox:1\n${flood}\nRUN dd if=/dev/zero of=/a bs=1M count=8 && sleep 2\nRUN echo last > /b && exit 5\n` },
    ]));
    made.push(r.body.docker_image);
    const img = await alice.waitForBuild(r.body.id, 120_000);
    expect(img.status).toBe('build_failed');
    expect(img.status_reason).toMatch(/non-zero code: 5/);
    // (the stored log is the tail: the steps after the flood)
    const logs = (await alice.get(`/api/images/${img.id}/build-logs`)).body.logs as string;
    const at = logs.search(/^Step 3\/\d+ : RUN dd/m);
    expect(at, logs.slice(-1500)).toBeGreaterThan(-1);
    const after = logs.slice(at);
    const ids = [...after.matchAll(/^ ---> ([0-9a-f]{12})$/gm)].map((m) => m[1]);
    expect(ids.length, after).toBeGreaterThanOrEqual(1);
    for (const id of ids) expect(await docker.getImage(id).inspect().then(() => 'kept', () => 'gone'), id).toBe('gone');
  }, 150_000);

  it("a multi-stage build leaves no earlier stage's image behind; the final image keeps its own steps", async () => {
    const r = await alice.upload({ name: 'stages', app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await makeTar([{
      name: 'Dockerfile',
      content: 'FROM berth-test/busybox:1 AS first\nRUN echo one > /one\nFROM berth-test/busybox:1 AS second\nRUN echo two > /two\nFROM berth-test/busybox:1\nCOPY --from=first /one /one\nCOPY --from=second /two /two\nRUN cat /one /two > /both\nCMD ["cat", "/both"]\n',
    }]));
    made.push(r.body.docker_image);
    const img = await alice.waitForBuild(r.body.id);
    expect(img.status, img.status_reason).toBe('ready');
    const logs = (await alice.get(`/api/images/${img.id}/build-logs`)).body.logs as string;
    const ids = [...logs.matchAll(/^ ---> ([0-9a-f]{12})$/gm)].map((m) => m[1]);
    const own = (await docker.getImage(img.docker_image).history()).map((h: { Id: string }) => h.Id);
    const kept: string[] = [];
    const gone: string[] = [];
    for (const id of ids) {
      const info = await docker.getImage(id).inspect().catch(() => null);
      if (info === null) gone.push(id);
      else if (info.RepoTags.length === 0 && !own.some((o: string) => o.startsWith(`sha256:${id}`))) kept.push(id);
    }
    expect(kept).toEqual([]);
    // the two earlier stages' steps (each stage's last one removed takes its parents with it)
    expect(gone).toHaveLength(2);
    // and the final image is whole: its parents are still there
    expect(own.filter((o: string) => o !== '<missing>').length).toBeGreaterThanOrEqual(4);
    for (const o of own) if (o !== '<missing>') expect(await docker.getImage(o).inspect().then(() => true, () => false), o).toBe(true);
  });

  it('a Dockerfile whose base image is not available fails with the Docker error', async () => {
    const r = await alice.upload({ name: 'nobase', app_hostname: host() }, await makeTar([{ name: 'Dockerfile', content: 'FROM berth-test/does-not-exist:0\n' }]));
    const img = await alice.waitForBuild(r.body.id);
    expect(img.status).toBe('build_failed');
    expect((await alice.get(`/api/images/${img.id}/build-logs`)).body.logs).toMatch(/berth-test\/does-not-exist/);
  });

  it('?follow=1 streams output live over SSE until the build ends', async () => {
    const df = 'FROM berth-test/busybox:1\nRUN echo "first-line" && sleep 2 && echo "second-line"\nRUN echo "third-line"\n';
    const r = await alice.upload({ name: 'slow', app_hostname: host() }, await makeTar([{ name: 'Dockerfile', content: df }]));
    made.push(r.body.docker_image);
    const res = await fetch(`${cp.url}/api/images/${r.body.id}/build-logs?follow=1`, { headers: { authorization: `Bearer ${alice.token}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const arrivals: { text: string; at: number }[] = [];
    const events = await readSse(res, (ev, d) => { if (ev === 'log') arrivals.push({ text: d.text, at: Date.now() }); });
    const last = events[events.length - 1];
    expect(last).toEqual({ event: 'end', data: { status: 'ready' } });
    const all = arrivals.map((a) => a.text).join('');
    expect(all).toMatch(/first-line[\s\S]*second-line[\s\S]*third-line/);
    // live, not one dump at the end: first-line arrived well before third-line
    const first = arrivals.find((a) => a.text.includes('first-line'))!;
    const third = arrivals.find((a) => a.text.includes('third-line'))!;
    expect(third.at - first.at).toBeGreaterThan(1000);
    // following a finished build returns the stored log and ends at once
    const again = await readSse(await fetch(`${cp.url}/api/images/${r.body.id}/build-logs?follow=1`, { headers: { authorization: `Bearer ${alice.token}` } }));
    expect(again.map((e) => e.event)).toEqual(['log', 'end']);
    expect(again[0].data.text).toContain('third-line');
  });

  it('a build-log follower counts as a stream, and one that does not read is disconnected instead of buffering the build', async () => {
    // ~24 MB of output in one step, then a pause: a follower that never reads would hold it all
    const df = 'FROM berth-test/busybox:1\nRUN head -c 24000000 /dev/zero | tr "\\0" x | fold -w 100 && sleep 3\n';
    const r = await alice.upload({ name: 'flood', app_hostname: host() }, await makeTar([{ name: 'Dockerfile', content: df }]));
    expect(r.status, r.text).toBe(201);
    made.push(r.body.docker_image);
    const me = Number((await alice.get('/api/auth/me')).body.user.id);
    const limits = streamLimits(cp.app);
    const u = new URL(cp.url);
    const req = httpRequest({ host: u.hostname, port: u.port, path: `/api/images/${r.body.id}/build-logs?follow=1`, headers: { authorization: `Bearer ${alice.token}` } });
    const res = await new Promise<IncomingMessage>((resolve, reject) => { req.on('response', resolve); req.on('error', reject); req.end(); });
    res.pause(); // never reads
    try {
      expect(res.statusCode).toBe(200);
      expect(limits.count(me)).toBe(1);
      // dropped while the build still runs (its sleep), the stream's place freed
      const t0 = Date.now();
      while (limits.count(me) > 0 && Date.now() - t0 < 60_000) await new Promise((res) => setTimeout(res, 100));
      expect(limits.count(me)).toBe(0);
      expect((await alice.get(`/api/images/${r.body.id}`)).body.status).toBe('building');
    } finally {
      req.destroy();
    }
    const img = await alice.waitForBuild(r.body.id, 90_000);
    expect(img.status, img.status_reason).toBe('ready');
  }, 120_000);

  it("a build's steps run with the configured memory (no swap) and CPU limits", async () => {
    // cgroup v2 or v1, whichever the daemon uses
    const df = 'FROM berth-test/busybox:1\nRUN echo "mem=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)" && echo "cpu=$(cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)"\n';
    const r = await alice.upload({ name: 'limited', app_hostname: host() }, await makeTar([{ name: 'Dockerfile', content: df }]));
    made.push(r.body.docker_image);
    const img = await alice.waitForBuild(r.body.id, 90_000);
    expect(img.status, img.status_reason).toBe('ready');
    const logs = (await alice.get(`/api/images/${img.id}/build-logs`)).body.logs as string;
    expect(logs).toContain(`mem=${256 * 1024 * 1024}`);
    expect(logs).toMatch(/cpu=50000\b/);
  });

  it("a build's steps together run at most BERTH_BUILD_PIDS processes: a fork bomb fails the build, not the host", async () => {
    const began = Date.now();
    const info = (await docker.info()) as { CgroupDriver?: string; CgroupVersion?: string };
    const here = await buildCgroups(info, true);
    if (typeof here === 'string') {
      // not bounded on this host (docs/security.md); the control plane said why in its log
      console.warn(`skipped: the processes of builds cannot be bounded on this host: ${here}`);
      return;
    }
    const bomb = 'FROM berth-test/busybox:1\nRUN for i in $(seq 1 100); do sleep 5 & done; wait; echo all-started\n';
    const r = await alice.upload({ name: 'forky', app_hostname: host() }, await makeTar([{ name: 'Dockerfile', content: bomb }]));
    made.push(r.body.docker_image);
    const img = await alice.waitForBuild(r.body.id, 90_000);
    expect(img.status).toBe('build_failed');
    const logs = (await alice.get(`/api/images/${img.id}/build-logs`)).body.logs as string;
    expect(logs).toMatch(/can't fork|Resource temporarily unavailable/);
    expect(logs).not.toMatch(/^all-started$/m);
    // a build under the limit is not bothered, and each build has its own count
    const fine = 'FROM berth-test/busybox:1\nRUN for i in $(seq 1 20); do sleep 1 & done; wait; echo twenty-started\nRUN for i in $(seq 1 20); do sleep 1 & done; wait\n';
    const ok = await alice.upload({ name: 'forky-ok', app_hostname: host() }, await makeTar([{ name: 'Dockerfile', content: fine }]));
    made.push(ok.body.docker_image);
    const built = await alice.waitForBuild(ok.body.id, 90_000);
    expect(built.status, built.status_reason).toBe('ready');
    // the builds' cgroups are gone afterwards (none made since this test began is left with this suite's limit)
    const base = join(pidsHierarchy(), BUILD_CGROUP_BASE);
    const mine = () => (existsSync(base) ? readdirSync(base) : []).filter((n) => {
      const made = /^b-([0-9a-z]+)-/.exec(n);
      if (made === null || parseInt(made[1], 36) < began) return false;
      try { return readFileSync(join(base, n, 'pids.max'), 'utf8').trim() === '64'; } catch { return false; }
    });
    for (let i = 0; i < 50 && mine().length > 0; i++) await new Promise((res) => setTimeout(res, 200));
    expect(mine()).toEqual([]);
  }, 120_000);

  it('a build that writes more than BERTH_BUILD_DISK is stopped: in one step, over several, in a last quick step; made-up output changes nothing', async () => {
    // the step prints what the daemon prints, to point the watch elsewhere: it measures the build's own cgroup instead
    const oneStep = "FROM berth-test/busybox:1\nRUN echo ' ---> Running in 0123456789ab' && echo ' ---> 0123456789ab' && dd if=/dev/zero of=/big bs=1M count=200 && sleep 5 && echo step-finished\n";
    // two steps under the limit, over it together (each every stage of a multi-stage build counts the same way)
    // (each step stays a few looks long: on a busy machine one look can take seconds)
    const manySteps = 'FROM berth-test/busybox:1\nRUN dd if=/dev/zero of=/a bs=1M count=40 && sleep 4\nRUN dd if=/dev/zero of=/b bs=1M count=40 && sleep 6\nRUN sleep 5 && echo step-finished\n';
    // a last step quicker than the watch's look: the finished image is measured, and removed
    const quick = 'FROM berth-test/busybox:1\nRUN dd if=/dev/zero of=/big bs=1M count=100\n';
    for (const [name, df] of [['disk-one', oneStep], ['disk-many', manySteps], ['disk-quick', quick]] as const) {
      const r = await alice.upload({ name, app_hostname: host() }, await makeTar([{ name: 'Dockerfile', content: df }]));
      made.push(r.body.docker_image);
      const img = await alice.waitForBuild(r.body.id, 90_000);
      expect(img.status, name).toBe('build_failed');
      const m = /^the build used more than 64 MiB of disk \((its steps wrote|the image, base included, has) (\d+) MiB; BERTH_BUILD_DISK\)$/.exec(img.status_reason);
      expect(m, img.status_reason).not.toBeNull();
      // what it had written when seen (a look may land mid-step): past the limit
      expect(Number(m![2])).toBeGreaterThan(64);
      if (name !== 'disk-quick') expect(m![1], name).toBe('its steps wrote');
      const logs = (await alice.get(`/api/images/${img.id}/build-logs`)).body.logs as string;
      expect(logs).not.toMatch(/^step-finished$/m);
      // the aborted step's container (and its 200 MiB) does not stay behind: the daemon kills and removes it
      const left = async () => (await docker.listContainers({ all: true })).filter((c) => c.Command.includes('dd if=/dev/zero') || c.Command.includes('sleep 5 && echo step-finished'));
      for (let i = 0; i < 100 && (await left()).length > 0; i++) await new Promise((res) => setTimeout(res, 200));
      expect(await left()).toEqual([]);
      expect(await docker.getImage(r.body.docker_image).inspect().then(() => 'kept', () => 'gone')).toBe('gone');
      // nor do the images of the steps that finished (up to the limit of disk each): the base alone stays
      const ids = [...logs.matchAll(/^ ---> ([0-9a-f]{12})$/gm)].map((m) => m[1]);
      const kept = [];
      for (const id of ids) if (await docker.getImage(id).inspect().then((i) => i.RepoTags.length === 0, () => false)) kept.push(id);
      expect(kept, name).toEqual([]);
    }
  }, 120_000);

  it('caps stored build output, keeping the tail and saying it was cut', async () => {
    const df = 'FROM berth-test/busybox:1\nRUN for i in $(seq 1 400); do echo "noisy line $i ................................"; done\n';
    const r = await alice.upload({ name: 'noisy', app_hostname: host() }, await makeTar([{ name: 'Dockerfile', content: df }]));
    made.push(r.body.docker_image);
    const img = await alice.waitForBuild(r.body.id);
    expect(img.status).toBe('ready');
    expect(img.build_logs_truncated).toBe(true);
    const logs = await alice.get(`/api/images/${img.id}/build-logs`);
    expect(logs.body.truncated).toBe(true);
    expect(logs.body.logs).toMatch(/^\[berth: \d+ bytes of earlier build output were cut/);
    expect(logs.body.logs).toContain('noisy line 400');
    expect(logs.body.logs).not.toContain('noisy line 1 ');
    expect(Buffer.byteLength(logs.body.logs)).toBeLessThan(4096 + 200);
  });

  it('DELETE removes the Docker image and the stored context', async () => {
    // min_instances 0 and no traffic: otherwise the reconcile loop starts a container (min_instances,
    // or one to prove a revision that scales from zero) and DELETE answers 409 until that container
    // is deleted (see test/e2e/reconcile-health.test.ts)
    const r = await alice.upload({ name: 'gone', app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await makeTar(appFiles()));
    const img = await alice.waitForBuild(r.body.id);
    expect(img.status).toBe('ready');
    const ctx = join(data.dir, 'builds', String(img.user_id), String(img.id));
    expect(existsSync(ctx)).toBe(true);
    expect((await alice.del(`/api/images/${img.id}`)).status).toBe(204);
    await expect(docker.getImage(img.docker_image).inspect()).rejects.toMatchObject({ statusCode: 404 });
    expect(existsSync(ctx)).toBe(false);
  });

  it('metrics count builds and durations', async () => {
    const m = await fetch(`${cp.url}/metrics`, { headers: { authorization: `Bearer ${cp.metricsToken}` } }).then((x) => x.text());
    expect(m).toMatch(/berth_cp_builds_total\{result="ready"\} [1-9]/);
    expect(m).toMatch(/berth_cp_builds_total\{result="build_failed"\} [1-9]/);
    expect(m).toMatch(/berth_cp_build_duration_seconds_count\{result="ready"\} [1-9]/);
  });
});
