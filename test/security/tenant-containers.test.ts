import { afterAll, beforeAll, expect, it } from 'vitest';
import { CONTAINER_CAPABILITIES } from '../../control-plane/runtime/containers.js';
import { Api } from '../helpers/api.js';
import { appFiles, makeTar } from '../helpers/archives.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { describeWithDocker, docker, removeClusterContainers } from '../helpers/docker.js';
import { containerIp, execIn, removeNetworks, uniqueNetworks, waitContainer } from './tenant-support.js';

/**
 * Tenant isolation of running containers (DESIGN.md "Security model"): two users' apps on berth's
 * network cannot reach each other directly (inter-container traffic off), nor can a build step
 * reach them; the published loopback port still serves and health checks still pass. Containers
 * run from the image id with no-new-privileges, few capabilities, a PID limit and a default
 * memory limit.
 */
const nets = uniqueNetworks();
let t: TestControlPlane;
let alice: Api;
let bob: Api;
let clusterId = '';
const images: string[] = [];
let a: { img: any; c: any };
let b: { img: any; c: any };
let seq = 0;
const host = () => `tenant${++seq}-${process.pid}.example.com`;

async function deploy(api: Api, marker: string): Promise<{ img: any; c: any }> {
  // no traffic: nothing starts on its own (a revision that scales from zero deployed with traffic
  // is started once to prove it can serve); the container is made by hand below
  const up = await api.upload({ name: 'web', app_hostname: host(), min_instances: 0, no_traffic: 'true', health_path: '/' }, await makeTar(appFiles({ index: `${marker}\n` })));
  expect(up.status, up.text).toBe(201);
  images.push(up.body.docker_image);
  const img = await api.waitForBuild(up.body.id, 90_000);
  expect(img.status, img.status_reason).toBe('ready');
  const made = await api.post(`/api/containers/${img.id}`, { count: 1 });
  expect(made.status, made.text).toBe(201);
  const c = await waitContainer(api, made.body.containers[0].id, (x) => x.status === 'running' && x.health === 'healthy');
  return { img, c };
}

await describeWithDocker('tenant isolation: networks and container hardening', () => {
  beforeAll(async () => {
    t = await startTestControlPlane({ seedDefaultUser: false, ...nets, health: { intervalMs: 300 } });
    clusterId = t.cp.app.platform.clusterId;
    const api = new Api(t.cp.url);
    alice = await api.signup('alice-tenant@example.com');
    bob = await api.signup('bob-tenant@example.com');
    a = await deploy(alice, 'alice-app');
    b = await deploy(bob, 'bob-secret-app');
  });

  afterAll(async () => {
    await t?.close();
    if (clusterId) await removeClusterContainers(clusterId);
    for (const ref of images) await docker.getImage(ref).remove({ force: true }).catch(() => {});
    await removeNetworks([nets.appNetwork, nets.buildNetwork]);
  });

  it('berth creates its networks as bridges with inter-container traffic disabled', async () => {
    for (const n of [nets.appNetwork, nets.buildNetwork]) {
      const info = await docker.getNetwork(n).inspect();
      expect(info.Driver).toBe('bridge');
      expect(info.Options?.['com.docker.network.bridge.enable_icc']).toBe('false');
    }
  });

  it("one tenant's container cannot reach another's address and port; the published loopback port still serves", async () => {
    const bobIp = await containerIp(b.c.docker_id, nets.appNetwork);
    // the host (what the health checker's TCP probes use) does reach it directly
    expect(await (await fetch(`http://${bobIp}:8080/`)).text()).toBe('bob-secret-app\n');
    const r = await execIn(a.c.docker_id, ['sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 ${bobIp} 8080`]);
    expect(r.out).not.toContain('bob-secret-app');
    expect(r.code).not.toBe(0);
    // what the proxy uses: 127.0.0.1:host_port
    const res = await fetch(`http://127.0.0.1:${b.c.host_port}/`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('bob-secret-app\n');
    expect(b.c.health).toBe('healthy');
  });

  it('a build step cannot reach running containers', async () => {
    const bobIp = await containerIp(b.c.docker_id, nets.appNetwork);
    // the markers are assembled by the shell, so the echoed command line never matches them
    // (a nonce, so the step never comes from the build cache)
    const probe = `RUN echo ${Date.now()}-${Math.random()} && if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 ${bobIp} 8080 | grep -q bob-secret; then echo "LEAK""ED"; else echo "ISOLA""TED"; fi\n`;
    const up = await alice.upload({ name: 'probe', app_hostname: host(), min_instances: 0, no_traffic: 'true' }, await makeTar(appFiles({ extraDockerfile: probe })));
    expect(up.status, up.text).toBe(201);
    images.push(up.body.docker_image);
    const img = await alice.waitForBuild(up.body.id, 90_000);
    expect(img.status, img.status_reason).toBe('ready');
    const logs = (await alice.get(`/api/images/${img.id}/build-logs`)).body.logs as string;
    // (stderr of the step before it may end in a colour reset on the same line)
    expect(logs).not.toMatch(/LEAKED$/m);
    expect(logs).toMatch(/ISOLATED$/m);
  });

  it('containers run from the image id, with no-new-privileges, few capabilities, PID, memory and CPU limits', async () => {
    const info = await docker.getContainer(a.c.docker_id).inspect();
    expect(a.img.docker_image_id).toMatch(/^sha256:[a-f0-9]{64}$/);
    expect(info.Config.Image).toBe(a.img.docker_image_id);
    expect(info.Image).toBe(a.img.docker_image_id);
    expect(info.HostConfig.NetworkMode).toBe(nets.appNetwork);
    expect(info.HostConfig.SecurityOpt).toContain('no-new-privileges:true');
    expect(info.HostConfig.CapDrop).toEqual(['ALL']);
    expect([...(info.HostConfig.CapAdd ?? [])].sort()).toEqual([...CONTAINER_CAPABILITIES].sort());
    expect(info.HostConfig.PidsLimit).toBe(512);
    expect(info.HostConfig.Memory).toBe(512 * 1024 * 1024);
    // no cpu_limit: the one vCPU it is billed for, not the whole host
    expect(a.img.cpu_limit).toBeNull();
    expect(info.HostConfig.NanoCpus).toBe(1e9);
    // and inside: the kernel agrees
    const status = (await execIn(a.c.docker_id, ['cat', '/proc/self/status'])).out;
    expect(status).toMatch(/NoNewPrivs:\s+1/);
    const capEff = BigInt('0x' + /CapEff:\s+([0-9a-f]+)/.exec(status)![1]);
    const NET_RAW = 13n;
    const SYS_CHROOT = 18n;
    const MKNOD = 27n;
    for (const cap of [NET_RAW, SYS_CHROOT, MKNOD]) expect(capEff & (1n << cap)).toBe(0n);
  });

  it('an upload that sets memory_limit gets that limit instead of the default', async () => {
    const up = await alice.upload({ name: 'mem', app_hostname: host(), min_instances: 0, no_traffic: 'true', memory_limit: '64m' }, await makeTar(appFiles()));
    expect(up.status, up.text).toBe(201);
    images.push(up.body.docker_image);
    const img = await alice.waitForBuild(up.body.id, 90_000);
    expect(img.status, img.status_reason).toBe('ready');
    const made = await alice.post(`/api/containers/${img.id}`, { count: 1 });
    expect(made.status, made.text).toBe(201);
    const info = await docker.getContainer(made.body.containers[0].docker_id).inspect();
    expect(info.HostConfig.Memory).toBe(64 * 1024 * 1024);
    expect(info.HostConfig.PidsLimit).toBe(512);
  });
});
