/**
 * `berth traffic HOST` says the split as stored and what the next deploy does with it (from a
 * walkthrough: `5=100`, `latest=100` and `5=90 latest=10` printed the same table, and only the
 * first keeps a deploy from taking traffic).
 */
import { describe, expect, it } from 'vitest';
import { splitRule } from '../../shared/client/commands/traffic.js';

const app = (traffic: { image_id?: number; latest?: boolean; percent: number; tag?: string; revision?: number | null }[]) => ({ app_hostname: 'shop.localhost', traffic });

describe('berth traffic: the split and the next deploy', () => {
  it('tells a pinned split, a canary and latest alone apart', () => {
    expect(splitRule(app([{ image_id: 15, percent: 100, revision: 5 }])))
      .toBe('split: 5=100; deploys keep this split: a new revision gets no traffic until a split names it (berth traffic shop.localhost latest=100 to follow deploys)\n');
    expect(splitRule(app([{ latest: true, percent: 100, revision: 5 }, { image_id: 13, percent: 0, tag: 'old', revision: 3 }])))
      .toBe('split: latest=100; each deploy takes all the traffic once it can serve\n');
    expect(splitRule(app([{ image_id: 15, percent: 90, revision: 5 }, { latest: true, percent: 10, revision: 5 }])))
      .toBe('split: 5=90 latest=10; deploys keep the shares given to revision numbers; each new one takes the latest share (10%)\n');
  });
});
