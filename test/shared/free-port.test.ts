/**
 * freePortBelowEphemeral() (shared/net.ts): ports for processes tests start are picked where
 * outgoing connections do not take theirs — below the kernel's ephemeral range — and are free.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { once } from 'node:events';
import { expect, it } from 'vitest';
import { freePortBelowEphemeral } from '../../shared/net.js';

const RANGE = '/proc/sys/net/ipv4/ip_local_port_range';

it.runIf(existsSync(RANGE))('picks ports below the ephemeral range, different ones, each free to listen on', async () => {
  const low = Number(readFileSync(RANGE, 'latin1').trim().split(/\s+/)[0]);
  const ports = await Promise.all(Array.from({ length: 20 }, () => freePortBelowEphemeral()));
  for (const p of ports) {
    if (low > 11_000) expect(p).toBeGreaterThanOrEqual(10_000);
    if (low > 11_000) expect(p).toBeLessThan(low);
  }
  // random over thousands of ports: twenty picks are (almost surely) not all the same
  expect(new Set(ports).size).toBeGreaterThan(1);
  // and never one twice, also when asked at once
  if (low > 11_000) expect(new Set(ports).size).toBe(ports.length);
  const s = createServer();
  s.listen(ports[0], '127.0.0.1');
  await once(s, 'listening');
  await new Promise<void>((r) => s.close(() => r()));
});
