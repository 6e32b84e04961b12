/** `--apps-path-hosts` (proxy/cli.ts): the proxy's own names, where /apps/{host}/ reaches an app. */
import { describe, expect, it } from 'vitest';
import { ownNamesOption } from '../../shared/own-names.js';
import { UsageError } from '../../shared/cli/args.js';

describe('--apps-path-hosts', () => {
  it('takes hostnames, comma separated, normalised', () => {
    expect(ownNamesOption(undefined)).toEqual([]);
    expect(ownNamesOption(' ')).toEqual([]);
    expect(ownNamesOption('Berth.Example.com, apps-proxy.internal.,x')).toEqual(['berth.example.com', 'apps-proxy.internal', 'x']);
  });
  it.each(['*.example.com', 'a.com:8080', 'a.com/x', 'user@a.com', 'http://a.com', 'a..com', '-a.com', 'ex ample.com', 'é.com'])('refuses %s with a usage error naming the flag', (v) => {
    expect(() => ownNamesOption(v)).toThrow(UsageError);
    expect(() => ownNamesOption(v)).toThrow(/--apps-path-hosts/);
  });
  it('takes at most 100 names', () => {
    expect(ownNamesOption(Array.from({ length: 100 }, (_, i) => `n${i}.example`).join(','))).toHaveLength(100);
    expect(() => ownNamesOption(Array.from({ length: 101 }, (_, i) => `n${i}.example`).join(','))).toThrow(/at most 100/);
  });
});
