import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packDirectory } from '../../control-plane/runtime/docker.js';
import { Api } from '../helpers/api.js';
import { makeTar } from '../helpers/archives.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * Uploaded sources and build contexts hold other people's code: readable by berth only
 * (directories 0700, files 0600, 0700 when executable), while the image still gets the usual
 * 0755 / 0644 modes.
 */
let t: TestControlPlane;
let alice: Api;
let img: any;

async function walk(dir: string, out: { path: string; mode: number; dir: boolean }[] = []) {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    const st = await lstat(p);
    if (st.isSymbolicLink()) continue;
    out.push({ path: p, mode: st.mode & 0o777, dir: st.isDirectory() });
    if (st.isDirectory()) await walk(p, out);
  }
  return out;
}

beforeAll(async () => {
  t = await startTestControlPlane({ seedDefaultUser: false, dockerHost: 'unix:///nonexistent/docker.sock' });
  alice = await new Api(t.cp.url).signup('files-alice@example.com');
  const r = await alice.upload({ name: 'files', app_hostname: `files-${process.pid}.example.com`, min_instances: 0, no_traffic: 'true' }, await makeTar([
    { name: 'Dockerfile', content: 'FROM berth-test/busybox:1\nCOPY . /app\n' },
    { name: 'src/', type: 'directory', mode: 0o777 },
    { name: 'src/config.json', content: '{"db_password":"hunter2"}\n', mode: 0o666 },
    { name: 'src/run.sh', content: 'echo hi\n', mode: 0o777 },
  ]));
  expect(r.status, r.text).toBe(201);
  img = r.body;
});
afterAll(async () => { await t?.close(); });

describe('file modes of uploads and build contexts', () => {
  it('uploads/, builds/ and every directory and file of a stored context are private to berth', async () => {
    const data = t.cp.config.dataDir;
    for (const d of ['uploads', 'builds', join('builds', String(img.user_id)), join('builds', String(img.user_id), String(img.id))]) {
      expect(((await lstat(join(data, d))).mode & 0o777).toString(8), d).toBe('700');
    }
    const ctx = join(data, 'builds', String(img.user_id), String(img.id), 'context');
    const entries = [{ path: ctx, mode: (await lstat(ctx)).mode & 0o777, dir: true }, ...(await walk(ctx))];
    expect(entries.length).toBe(5);
    for (const e of entries) {
      expect(e.mode & 0o077, `${e.path} is ${e.mode.toString(8)}`).toBe(0);
      if (e.dir) expect(e.mode, e.path).toBe(0o700);
    }
    expect((await lstat(join(ctx, 'src/config.json'))).mode & 0o777).toBe(0o600);
    expect((await lstat(join(ctx, 'src/run.sh'))).mode & 0o777).toBe(0o700);
  });

  it('the build context sent to Docker carries the usual modes (0755 directories and executables, 0644 files)', async () => {
    const ctx = join(t.cp.config.dataDir, 'builds', String(img.user_id), String(img.id), 'context');
    const modes: Record<string, number> = {};
    const extract = tarStream.extract();
    extract.on('entry', (h, stream, next) => { modes[h.name] = h.mode ?? -1; stream.on('end', next); stream.resume(); });
    const done = new Promise<void>((resolve, reject) => { extract.on('finish', resolve); extract.on('error', reject); });
    packDirectory(ctx).pipe(extract);
    await done;
    expect(modes).toEqual({ 'Dockerfile': 0o644, 'src': 0o755, 'src/config.json': 0o644, 'src/run.sh': 0o755 });
  });
});
