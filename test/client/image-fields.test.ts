import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ApiError } from '../../control-plane/http/errors.js';
import { imageFieldsSchema, parseImageFields } from '../../control-plane/images/fields.js';
import { fieldProblem, IMAGE_INT_FIELDS, IMAGE_TEXT_FIELDS, type ImageTextField } from '../../shared/image-fields.js';
import { BIN, built } from '../e2e/support.js';

/**
 * One set of image field rules (shared/image-fields.ts) for the control plane's upload schema and
 * `berth deploy`: the CLI refuses exactly what the control plane refuses for its pattern or length,
 * with the same description.
 */

const CASES: Record<ImageTextField, string[]> = {
  name: ['shop', 'my-app.v2', 'a_b', 'a'.repeat(63), 'a'.repeat(64), '', 'Shop', '-a', 'a-', 'a--b', 'a b', 'ä'],
  tag: ['latest', 'v1.2.3', '_x', 'A-b.C_d', 'a'.repeat(128), 'a'.repeat(129), '', '.x', '-x', 'a/b', 'a:b'],
  cpu_limit: ['0.5', '500m', '2', '1.25', '', 'lots', '.5', '1.', '5mm', '0.5 ', '1e2', '12345678901234567'],
  memory_limit: ['512m', '1g', '256Mi', '1048576', '1.5G', '512 MiB', '', 'lots', '-1m', '1p', '512mb ', '1m'.padStart(17, '1')],
  health_path: ['/healthz', '/', '/a?b=c', '', 'healthz', '/a b', '/é', `/${'a'.repeat(255)}`, `/${'a'.repeat(256)}`],
};

/** null when the control plane takes `value` for `field`, else its 400 message. */
function serverProblem(field: ImageTextField, value: string): string | null {
  try {
    parseImageFields({ name: 'x', app_hostname: 'app.example.com', [field]: value });
    return null;
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    return e.message;
  }
}

describe('shared image field rules', () => {
  for (const [field, values] of Object.entries(CASES) as [ImageTextField, string[]][]) {
    it(`${field}: the CLI's check and the control plane agree`, () => {
      for (const value of values) {
        const cli = fieldProblem(field, value);
        const server = serverProblem(field, value);
        // CPU and memory amounts out of range pass the pattern here and are refused by the control plane only
        if (cli === null && server !== null) expect(server, `${field} ${JSON.stringify(value)}`).toMatch(/must be between/);
        else expect(cli === null, `${field} ${JSON.stringify(value)}: cli ${cli}, server ${server}`).toBe(server === null);
        // a value off the pattern: both describe the field the same way
        if (cli === `must be ${IMAGE_TEXT_FIELDS[field].help}`) expect(server).toBe(`field "${field}" ${cli}`);
      }
    });
  }

  it('the control plane schema uses the shared patterns, lengths and bounds', () => {
    const props = imageFieldsSchema.properties as Record<string, { pattern?: string; maxLength?: number; minimum?: number; maximum?: number }>;
    for (const [field, rule] of Object.entries(IMAGE_TEXT_FIELDS)) expect(props[field]).toMatchObject({ pattern: rule.pattern, maxLength: rule.maxLength });
    for (const [field, { min, max }] of Object.entries(IMAGE_INT_FIELDS)) expect(props[field]).toMatchObject({ minimum: min, maximum: max });
  });
});

describe.skipIf(!built())('berth deploy', () => {
  function deploy(args: string[]): Promise<{ code: number | null; err: string }> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [BIN, 'deploy', '--host', 'app.localhost', ...args], {
        env: { ...process.env, BERTH_TOKEN: 'berth_x', BERTH_API: 'http://127.0.0.1:9', BERTH_CONFIG_DIR: '/nonexistent/berth-test', NO_COLOR: '1' }, stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d) => { err += d; });
      child.on('exit', (code) => resolve({ code, err }));
    });
  }

  it('refuses a flag the control plane would refuse, in its words, before reaching the API (exit 2)', async () => {
    const cpu = await deploy(['--cpu', '5mm']);
    expect(cpu.code).toBe(2);
    expect(cpu.err).toContain(`--cpu "5mm" must be ${IMAGE_TEXT_FIELDS.cpu_limit.help}`);
    const mem = await deploy(['--memory', '1p']);
    expect(mem.code).toBe(2);
    expect(mem.err).toContain(`--memory "1p" must be ${IMAGE_TEXT_FIELDS.memory_limit.help}`);
    const path = await deploy(['--health-path', `/${'a'.repeat(256)}`]);
    expect(path.code).toBe(2);
    expect(path.err).toContain('must be at most 256 characters');
    const port = await deploy(['--port', '65536']);
    expect(port.code).toBe(2);
    expect(port.err).toContain('--port must be an integer from 1 to 65535');
  });
});
