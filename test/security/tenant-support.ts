import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { docker } from '../helpers/docker.js';
import type { Api } from '../helpers/api.js';

/** Shared by the tenant-isolation suites: unique berth networks per control plane, exec, waits. */

export function uniqueNetworks(): { appNetwork: string; buildNetwork: string } {
  const id = `${process.pid}-${randomBytes(3).toString('hex')}`;
  return { appNetwork: `berth-t-apps-${id}`, buildNetwork: `berth-t-builds-${id}` };
}

/** Remove networks a test control plane created (after its containers are gone). */
export async function removeNetworks(names: string[]): Promise<void> {
  for (const n of names) await docker.getNetwork(n).remove().catch(() => {});
}

/** Run a command in a container; stdout and stderr together, and the exit code. */
export async function execIn(containerId: string, cmd: string[]): Promise<{ code: number; out: string }> {
  const ex = await docker.getContainer(containerId).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
  const stream = await ex.start({ hijack: true, stdin: false });
  const sink = new PassThrough();
  const chunks: Buffer[] = [];
  sink.on('data', (c: Buffer) => chunks.push(c));
  docker.modem.demuxStream(stream, sink, sink);
  await new Promise<void>((resolve) => { stream.on('end', resolve); stream.on('close', resolve); });
  const info = await ex.inspect();
  return { code: info.ExitCode ?? -1, out: Buffer.concat(chunks).toString() };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll a container until `pred` holds (or fail with its last state). */
export async function waitContainer(api: Api, id: number, pred: (c: any) => boolean, timeoutMs = 30_000): Promise<any> {
  const end = Date.now() + timeoutMs;
  let last: any;
  for (;;) {
    const r = await api.get(`/api/containers/${id}`);
    last = r.body;
    if (r.status === 200 && pred(r.body)) return r.body;
    if (Date.now() > end) throw new Error(`container ${id} not as expected after ${timeoutMs}ms: ${JSON.stringify(last)}`);
    await sleep(200);
  }
}

/** The container's address on a network, from Docker. */
export async function containerIp(dockerId: string, network: string): Promise<string> {
  const info = await docker.getContainer(dockerId).inspect();
  // any address when not on `network` (so a test of isolation fails on reachability, not here)
  const ip = info.NetworkSettings.Networks[network]?.IPAddress || Object.values(info.NetworkSettings.Networks).find((n) => n.IPAddress)?.IPAddress;
  if (!ip) throw new Error(`container ${dockerId.slice(0, 12)} has no address on ${network}: ${JSON.stringify(Object.keys(info.NetworkSettings.Networks))}`);
  return ip;
}
