/**
 * `berth load` option checks that must fail before a single request is sent (bench/workload/cli.ts),
 * and the one-line error the CLIs print for system errors (shared/cli/args.ts describeError).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadOptions } from '../../bench/workload/cli.js';
import { UsageError, describeError } from '../../shared/cli/args.js';

const dir = mkdtempSync(join(tmpdir(), 'berth-load-opts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const base = ['--url', 'http://127.0.0.1:9/'];

describe('berth load options', () => {
  it('--stages set the length and the first rate when --duration and --rps are left out', () => {
    const { options } = loadOptions([...base, '--pattern', 'step', '--stages', '1m:100,1m:200']);
    expect(options.duration_seconds).toBe(120);
    expect(options.rps).toBe(100);
  });

  it('a --duration shorter than the --stages is refused, not cut short silently', () => {
    expect(() => loadOptions([...base, '--pattern', 'step', '--stages', '1m:100,1m:200', '--duration', '30s'])).toThrow(UsageError);
    expect(loadOptions([...base, '--pattern', 'step', '--stages', '1m:100', '--duration', '90s']).options.duration_seconds).toBe(90);
  });

  it('--body @file: a device, a directory or a file over 1 MiB is refused before it is read', () => {
    expect(() => loadOptions([...base, '--rps', '10', '--body', '@/dev/zero'])).toThrow(/not a regular file/);
    expect(() => loadOptions([...base, '--rps', '10', '--body', `@${dir}`])).toThrow(/not a regular file/);
    const big = join(dir, 'big');
    writeFileSync(big, Buffer.alloc(1024 * 1024 + 1));
    expect(() => loadOptions([...base, '--rps', '10', '--body', `@${big}`])).toThrow(/at most/);
  });

  it('--json / --html naming a directory is refused up front', () => {
    expect(() => loadOptions([...base, '--rps', '10', '--json', dir])).toThrow(/is a directory/);
    expect(() => loadOptions([...base, '--rps', '10', '--html', dir])).toThrow(/is a directory/);
  });
});

describe('describeError', () => {
  it('a system error is one line naming the path and the code, not a stack', () => {
    let err: unknown;
    try {
      writeFileSync(dir, 'x');
    } catch (e) {
      err = e;
    }
    const line = describeError(err);
    expect(line).toContain(dir);
    expect(line).toContain('EISDIR');
    expect(line).not.toContain('\n    at ');
  });

  it('malformed JSON from a server is named as such', () => {
    let err: unknown;
    try {
      JSON.parse('{nope');
    } catch (e) {
      err = e;
    }
    expect(describeError(err)).toMatch(/not valid JSON/);
  });
});
