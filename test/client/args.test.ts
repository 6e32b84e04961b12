/**
 * The flag parser every berth command shares (shared/cli/args.ts): flags > env > defaults, the
 * last of a repeated flag wins (scripts append overrides), repeatable flags keep every value.
 */
import { describe, expect, it } from 'vitest';
import { UsageError, listOption, parseArgs, resolveOptions, type OptionSpec } from '../../shared/cli/args.js';
import { didYouMean } from '../../shared/cli/suggest.js';

const specs: OptionSpec[] = [
  { name: 'min', help: '' },
  { name: 'env', repeatable: true, help: '' },
  { name: 'host', env: 'T_HOST', default: 'd.example', help: '' },
  { name: 'yes', boolean: true, help: '' },
];

describe('shared/cli/args', () => {
  it('the last of a repeated flag wins; a repeatable one keeps every value in order', () => {
    const a = parseArgs(['--min', '1', '--env', 'A=1', 'dir', '--min=3', '--env=B=2=x', '--env', 'C=']);
    const o = resolveOptions(a, specs, {});
    expect(o.min).toBe('3');
    expect(listOption(a, 'env')).toEqual(['A=1', 'B=2=x', 'C=']);
    expect(listOption(a, 'host')).toEqual([]);
    expect(a.positional).toEqual(['dir']);
  });

  it('flags beat the environment, which beats defaults; unknown flags and missing values are usage errors', () => {
    expect(resolveOptions(parseArgs([]), specs, {}).host).toBe('d.example');
    expect(resolveOptions(parseArgs([]), specs, { T_HOST: 'e.example' }).host).toBe('e.example');
    expect(resolveOptions(parseArgs(['--host', 'f.example']), specs, { T_HOST: 'e.example' }).host).toBe('f.example');
    expect(() => resolveOptions(parseArgs(['--nope', '1']), specs, {})).toThrow(UsageError);
    expect(() => resolveOptions(parseArgs(['--min']), specs, {})).toThrow(/--min needs a value/);
    expect(() => resolveOptions(parseArgs(['--env', 'A=1', '--env']), specs, {})).toThrow(/--env needs a value/);
    expect(resolveOptions(parseArgs(['--yes']), specs, {}).yes).toBe('true');
  });

  it('a mistyped flag or command gets the nearest known one, two edits away at most', () => {
    expect(() => resolveOptions(parseArgs(['--hots', 'x']), specs, {})).toThrow('unknown flag --hots (did you mean --host?)');
    expect(() => resolveOptions(parseArgs(['--mni', '1']), specs, {})).toThrow('unknown flag --mni (did you mean --min?)');
    expect(() => resolveOptions(parseArgs(['--colour']), specs, {})).toThrow(/^unknown flag --colour$/);
    expect(didYouMean('deplyo', ['deploy', 'delete', 'logs'])).toBe(' (did you mean deploy?)');
    expect(didYouMean('x', ['yes'])).toBe('');
    expect(didYouMean('', ['yes'])).toBe('');
  });
});
