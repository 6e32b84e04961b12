/**
 * How the control plane reaches Docker (runtime/docker.ts dockerOptions): a unix socket, TCP on
 * loopback, or TLS with the docker CLI's client certificate. Plain TCP to another machine is
 * refused: whatever reaches that port, the apps too, could create a privileged container.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dockerOptions } from '../../control-plane/runtime/docker.js';
import { UsageError } from '../../shared/cli/args.js';
import { tempDir } from '../helpers/tmp.js';

describe('DOCKER_HOST', () => {
  it('unix sockets and plain TCP on loopback as given', () => {
    expect(dockerOptions('unix:///run/x.sock', {}).opts).toEqual({ socketPath: '/run/x.sock' });
    expect(dockerOptions(undefined, {}).opts).toEqual({ socketPath: '/var/run/docker.sock' });
    expect(dockerOptions('tcp://127.0.0.1:2375', {}).opts).toMatchObject({ host: '127.0.0.1', port: 2375, protocol: 'http' });
    expect(dockerOptions('tcp://[::1]:2375', {}).opts).toMatchObject({ host: '::1', protocol: 'http' });
  });

  it('the daemon given wins over DOCKER_HOST in the environment (docker-modem reads it too); ports as written', async () => {
    const { default: Docker } = await import('dockerode');
    const was = process.env.DOCKER_HOST;
    process.env.DOCKER_HOST = 'tcp://10.0.0.5:2375';
    try {
      const m = (new Docker(dockerOptions('unix:///var/run/docker.sock', {}).opts) as unknown as { modem: { host?: string; socketPath?: string } }).modem;
      expect(m.host).toBeUndefined();
      expect(m.socketPath).toBe('/var/run/docker.sock');
    } finally {
      if (was === undefined) delete process.env.DOCKER_HOST; else process.env.DOCKER_HOST = was;
    }
    expect(dockerOptions('tcp://127.0.0.1:80', {}).opts).toMatchObject({ port: 80 });
    expect(dockerOptions('tcp://127.0.0.1', {}).opts).toMatchObject({ port: 2375 });
    expect(dockerOptions('tcp://[::1]:2377', {}).opts).toMatchObject({ port: 2377 });
    expect(() => dockerOptions('ssh://me@host', {})).toThrow(/ssh is not supported/);
  });

  it('plain TCP to another machine is refused with the ways out; the operator may insist', () => {
    for (const h of ['tcp://10.0.0.5:2375', 'tcp://docker.internal:2375', 'http://172.17.0.1:2375']) {
      expect(() => dockerOptions(h, {}), h).toThrow(UsageError);
      expect(() => dockerOptions(h, {}), h).toThrow(/plain TCP to another machine.*DOCKER_TLS_VERIFY.*BERTH_DOCKER_INSECURE_TCP=1/);
    }
    expect(dockerOptions('tcp://10.0.0.5:2375', { BERTH_DOCKER_INSECURE_TCP: '1' }).opts).toMatchObject({ host: '10.0.0.5', protocol: 'http' });
    expect(() => dockerOptions('ftp://x', {})).toThrow(UsageError);
  });

  it('TLS takes the client certificate from DOCKER_CERT_PATH, and says which file is missing', async () => {
    const d = await tempDir('berth-docker-tls-');
    try {
      expect(() => dockerOptions('tcp://10.0.0.5:2376', { DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: d.dir })).toThrow(/needs .*ca\.pem/);
      await mkdir(d.dir, { recursive: true });
      for (const f of ['ca.pem', 'cert.pem', 'key.pem']) await writeFile(join(d.dir, f), `${f}\n`);
      const o = dockerOptions('tcp://10.0.0.5:2376', { DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: d.dir }).opts as Record<string, unknown>;
      expect(o).toMatchObject({ host: '10.0.0.5', port: 2376, protocol: 'https' });
      expect(String(o.ca)).toBe('ca.pem\n');
      expect(String(o.key)).toBe('key.pem\n');
    } finally {
      await d.cleanup();
    }
  });
});
