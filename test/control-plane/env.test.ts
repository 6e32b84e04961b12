/**
 * App environment variables: the control plane's rules for a revision's set (inherit, set,
 * unset, clear; names, reserved names, NUL, sizes), what a container gets, and the CLI's
 * --env / --env-file parsing (dotenv) with the same name rule.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { containerEnv, nextEnv } from '../../control-plane/images/env.js';
import { ApiError } from '../../control-plane/http/errors.js';
import { UsageError } from '../../shared/cli/args.js';
import { envAssignment, readEnvFile } from '../../shared/client/env-file.js';

const dir = mkdtempSync(join(tmpdir(), 'berth-env-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const refused = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ApiError);
    expect((e as ApiError).status).toBe(400);
    return (e as Error).message;
  }
  throw new Error('not refused');
};

describe('nextEnv (a new revision\'s variables)', () => {
  const prev = { A: '1', B: '2' };
  it('inherits the previous set, sets and replaces, unsets, or starts from nothing', () => {
    expect({ ...nextEnv(prev, {}) }).toEqual(prev);
    expect({ ...nextEnv(prev, { env: '{"B":"two","C":"3"}' }) }).toEqual({ A: '1', B: 'two', C: '3' });
    expect({ ...nextEnv(prev, { env_unset: '["A","NOPE"]' }) }).toEqual({ B: '2' });
    expect({ ...nextEnv(prev, { env_clear: true, env: '{"Z":""}' }) }).toEqual({ Z: '' });
    expect(Object.keys(nextEnv({}, { env: '{"b":"x","a":"y"}' }))).toEqual(['a', 'b']);
  });

  it('takes "__proto__" as a name like any other, without touching a prototype', () => {
    const e = nextEnv({}, { env: '{"__proto__":"x","constructor":"y"}' });
    expect(Object.keys(e)).toEqual(['__proto__', 'constructor']);
    expect(e.__proto__).toBe('x');
    expect(Object.getPrototypeOf(e)).toBeNull();
  });

  it('refuses malformed fields, bad or reserved names, non-string values, NUL and oversized sets with a 400 naming them', () => {
    expect(refused(() => nextEnv({}, { env: '{nope' }))).toMatch(/"env" is not valid JSON/);
    expect(refused(() => nextEnv({}, { env: '["A"]' }))).toMatch(/JSON object/);
    expect(refused(() => nextEnv({}, { env: 'null' }))).toMatch(/JSON object/);
    expect(refused(() => nextEnv({}, { env_unset: '{"A":1}' }))).toMatch(/JSON array/);
    expect(refused(() => nextEnv({}, { env_unset: '[1]' }))).toMatch(/JSON array/);
    expect(refused(() => nextEnv({}, { env: '{"1A":"x"}' }))).toMatch(/"1A" must be letters/);
    expect(refused(() => nextEnv({}, { env: '{"A-B":"x"}' }))).toMatch(/"A-B"/);
    expect(refused(() => nextEnv({}, { env: '{"A=B":"x"}' }))).toMatch(/"A=B"/);
    expect(refused(() => nextEnv({}, { env: '{"":"x"}' }))).toMatch(/name ""/);
    for (const r of ['PORT', 'port', 'K_SERVICE', 'K_REVISION', 'K_CONFIGURATION']) {
      expect(refused(() => nextEnv({}, { env: JSON.stringify({ [r]: '1' }) }))).toMatch(/set by berth/);
    }
    expect(refused(() => nextEnv({}, { env: '{"A":1}' }))).toMatch(/value of A must be a string/);
    expect(refused(() => nextEnv({}, { env: '{"A":"x\\u0000y"}' }))).toMatch(/NUL/);
    expect(refused(() => nextEnv({}, { env: JSON.stringify({ A: 'x'.repeat(32 * 1024 + 1) }) }))).toMatch(/longer than 32768/);
    expect(refused(() => nextEnv({}, { env: JSON.stringify({ ['N'.repeat(129)]: 'x' }) }))).toMatch(/at most 128/);
    const many = Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`V${i}`, '']));
    expect(refused(() => nextEnv({}, { env: JSON.stringify(many) }))).toMatch(/201 variables; at most 200/);
    const big = Object.fromEntries(Array.from({ length: 3 }, (_, i) => [`V${i}`, 'x'.repeat(30_000)]));
    expect(refused(() => nextEnv({}, { env: JSON.stringify(big) }))).toMatch(/at most 65536/);
    // the inherited set counts too
    expect(refused(() => nextEnv({ A: 'x'.repeat(30_000), B: 'x'.repeat(30_000) }, { env: JSON.stringify({ C: 'x'.repeat(10_000) }) }))).toMatch(/at most 65536/);
  });

  it('a container gets its revision\'s variables and what berth sets, which the revision cannot override', () => {
    const env = containerEnv({ env: { A: '1' }, container_port: 9000, app_hostname: 'shop.example.com', revision: 12 });
    expect(env).toEqual({ A: '1', PORT: '9000', K_SERVICE: 'shop.example.com', K_CONFIGURATION: 'shop.example.com', K_REVISION: 'shop.example.com-00012' });
    expect(containerEnv({ env: { PORT: '1' }, container_port: 9000, app_hostname: 'a.b', revision: 1 }).PORT).toBe('9000');
  });
});

describe('berth deploy --env / --env-file', () => {
  it('NAME=VALUE: the value keeps "=" and may be empty; the name follows the control plane\'s rule', () => {
    expect(envAssignment('A=b=c', '--env')).toEqual(['A', 'b=c']);
    expect(envAssignment('A=', '--env')).toEqual(['A', '']);
    expect(() => envAssignment('A', '--env')).toThrow(UsageError);
    expect(() => envAssignment('=x', '--env')).toThrow(UsageError);
    expect(() => envAssignment('PORT=1', '--env')).toThrow(/set by berth/);
    expect(() => envAssignment('9X=1', '--env')).toThrow(/letters/);
  });

  it('reads dotenv files: comments, export, quotes and escapes; errors name the line', () => {
    const f = join(dir, '.env');
    writeFileSync(f, [
      '# a comment', '', 'export A=1', 'B = two words  # trailing comment', 'C="line1\\nline2 \\"q\\""', "D='as $written\\n'",
      'E=', 'F=a#b', '  G=spaced  ',
    ].join('\n'));
    expect(readEnvFile(f)).toEqual([
      ['A', '1'], ['B', 'two words'], ['C', 'line1\nline2 "q"'], ['D', 'as $written\\n'], ['E', ''], ['F', 'a#b'], ['G', 'spaced'],
    ]);
    const bad = join(dir, 'bad.env');
    writeFileSync(bad, 'A=1\nnot an assignment\n');
    expect(() => readEnvFile(bad)).toThrow(/bad\.env:2: "not an assignment" is not NAME=VALUE/);
    writeFileSync(bad, 'A=1\nB="open\n');
    expect(() => readEnvFile(bad)).toThrow(/bad\.env:2: the value of B opens a "/);
    writeFileSync(bad, 'PORT=1\n');
    expect(() => readEnvFile(bad)).toThrow(/bad\.env:1: the name "PORT" is set by berth/);
    expect(() => readEnvFile(dir)).toThrow(/not a regular file/);
    expect(() => readEnvFile('/dev/zero')).toThrow(/not a regular file/);
    expect(() => readEnvFile(join(dir, 'missing.env'))).toThrow(/ENOENT|no such file/);
  });
});
