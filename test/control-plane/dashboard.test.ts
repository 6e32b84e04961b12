import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/** The provisioned Grafana dashboard only names metrics that berth exports. */
const ROOT = join(import.meta.dirname, '..', '..');
const sources = (dir: string): string[] => readdirSync(dir).flatMap((f) => {
  const p = join(dir, f);
  return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [readFileSync(p, 'utf8')] : [];
});

describe('deploy/grafana dashboard', () => {
  it('parses, has panels with queries, and every berth_* metric it uses is defined in the code', () => {
    const d = JSON.parse(readFileSync(join(ROOT, 'deploy/grafana/dashboards/berth.json'), 'utf8'));
    expect(d.uid).toBe('berth-overview');
    expect(d.panels.length).toBeGreaterThan(5);
    const code = [...sources(join(ROOT, 'proxy')), ...sources(join(ROOT, 'control-plane'))].join('\n');
    const names = new Set<string>();
    for (const p of d.panels) {
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets) for (const m of (t.expr as string).matchAll(/\b(berth_[a-z_]+)/g)) names.add(m[1].replace(/_(bucket|sum|count)$/, ''));
    }
    expect(names.size).toBeGreaterThan(5);
    for (const n of names) expect(code.includes(`'${n}'`) || code.includes(`${n}{`) || code.includes(`${n} `), n).toBe(true);
  });
});
