/** The traffic model (control-plane/apps/traffic.ts): resolution of `latest`, deploys, validation. */
import { TAG_MAX_LENGTH, tagProblem } from '../../shared/tag.js';
import { describe, expect, it } from 'vitest';
import { checkAppHostname } from '../../control-plane/images/fields.js';
import { checkTag, checkTraffic, promote, resolveTraffic, trafficAfterDeploy, type RevisionState, type TrafficEntry, type TrafficRevision } from '../../control-plane/apps/traffic.js';

const rev = (id: number, revision: number, status: RevisionState['status'] = 'ready', routable = true, failed = false, served = routable): TrafficRevision => ({ id, revision, status, routable, failed, served });

describe('resolveTraffic', () => {
  it('latest is the newest routable revision; the newest ready one is serving too while it boots', () => {
    const r = resolveTraffic([{ latest: true, percent: 100 }], [rev(1, 1), rev(2, 2, 'ready', false), rev(3, 3, 'building', false)]);
    expect(r.latest).toBe(1);
    expect([...r.percent]).toEqual([[1, 100]]);
    expect([...r.serving].sort()).toEqual([1, 2]);
  });

  it('falls back to the newest ready revision when none has served yet (a first deploy is 503 or wakes, not 404)', () => {
    expect(resolveTraffic([{ latest: true, percent: 100 }], [rev(1, 1, 'ready', false)]).latest).toBe(1);
    expect(resolveTraffic([{ latest: true, percent: 100 }], [rev(1, 1, 'building', false)]).latest).toBeNull();
  });

  it('pinned entries, tags and failed builds', () => {
    const r = resolveTraffic(
      [{ image_id: 1, percent: 90 }, { image_id: 2, percent: 10, tag: 'b' }, { image_id: 3, percent: 0, tag: 'c' }, { image_id: 4, percent: 0, tag: 'x' }],
      [rev(1, 1), rev(2, 2), rev(3, 3), rev(4, 4, 'build_failed', false)]);
    expect([...r.percent]).toEqual([[1, 90], [2, 10]]);
    expect([...r.tags]).toEqual([[2, ['b']], [3, ['c']]]);
    expect([...r.serving].sort()).toEqual([1, 2, 3]);
  });

  it('a revision that could not start is as one not ready: no share, no tag, never latest, nothing to run', () => {
    // v3 (routable: it scales from zero) could not start: latest goes back to v2
    const r = resolveTraffic([{ latest: true, percent: 100 }, { image_id: 3, percent: 0, tag: 'canary' }], [rev(1, 1), rev(2, 2), rev(3, 3, 'ready', true, true)]);
    expect(r.latest).toBe(2);
    expect([...r.percent]).toEqual([[2, 100]]);
    expect([...r.tags]).toEqual([]);
    expect([...r.serving]).toEqual([2]);
    // the only revision failed: nothing serves (the app has no route), nothing runs
    const only = resolveTraffic([{ latest: true, percent: 100 }], [rev(1, 1, 'ready', false, true)]);
    expect([only.latest, [...only.percent], [...only.serving]]).toEqual([null, [], []]);
    // a pinned share of it goes nowhere; the rest serves as split
    expect([...resolveTraffic([{ image_id: 1, percent: 50 }, { image_id: 2, percent: 50 }], [rev(1, 1), rev(2, 2, 'ready', false, true)]).percent]).toEqual([[1, 50]]);
  });
});

describe('trafficAfterDeploy and the pending revision', () => {
  it('a plain deploy leaves the split alone: the new revision is pending', () => {
    const split = [{ image_id: 1, percent: 90 }, { image_id: 2, percent: 10, tag: 'canary' }];
    expect(trafficAfterDeploy(split, { imageId: 3, noTraffic: false, tag: null, latestNow: 1 })).toEqual(split);
  });

  it('until the pending revision serves, the stored split does — even with a newer routable canary', () => {
    // v2 serves; v3 is a healthy no-traffic canary; v4 is deployed with traffic and still boots
    const stored = [{ image_id: 2, percent: 100 }, { image_id: 3, percent: 0, tag: 'canary' }];
    const booting = resolveTraffic(stored, [rev(2, 2), rev(3, 3), rev(4, 4, 'ready', false)], 4);
    expect([...booting.percent]).toEqual([[2, 100]]);
    expect(booting.promoted).toBeNull();
    expect([...booting.serving].sort()).toEqual([2, 3, 4]);
    // v4 serves: all traffic to it, as latest, the canary keeps its tag
    const served = resolveTraffic(stored, [rev(2, 2), rev(3, 3), rev(4, 4)], 4);
    expect([...served.percent]).toEqual([[4, 100]]);
    expect(served.promoted).toEqual([{ latest: true, percent: 100 }, { image_id: 3, percent: 0, tag: 'canary' }]);
    expect([...served.serving].sort()).toEqual([3, 4]);
    // a pending revision whose build failed changes nothing
    expect([...resolveTraffic(stored, [rev(2, 2), rev(4, 4, 'build_failed', false)], 4).percent]).toEqual([[2, 100]]);
    // nor one that could not start: it is not promoted, and runs nothing
    const failed = resolveTraffic(stored, [rev(2, 2), rev(3, 3), rev(4, 4, 'ready', true, true)], 4);
    expect([[...failed.percent], failed.promoted, [...failed.serving].sort()]).toEqual([[[2, 100]], null, [2, 3]]);
  });

  it('promote pins the revision when a newer one is already routable', () => {
    expect(promote([{ latest: true, percent: 100, tag: 'main' }], 4, false)).toEqual([{ image_id: 4, percent: 100, tag: 'main' }]);
  });

  it('no_traffic pins latest to what it serves now, so the split survives', () => {
    expect(trafficAfterDeploy([{ latest: true, percent: 100 }], { imageId: 3, noTraffic: true, tag: null, latestNow: 2 }))
      .toEqual([{ image_id: 2, percent: 100 }]);
    expect(trafficAfterDeploy([{ image_id: 1, percent: 50 }, { image_id: 2, percent: 50 }], { imageId: 3, noTraffic: true, tag: 'next', latestNow: 2 }))
      .toEqual([{ image_id: 1, percent: 50 }, { image_id: 2, percent: 50 }, { image_id: 3, percent: 0, tag: 'next' }]);
  });

  it('no_traffic merges latest into an entry that already names its revision: the split stays one the API takes', () => {
    const revs = [rev(7, 1), rev(8, 2), rev(9, 3, 'building', false)];
    const pinned = trafficAfterDeploy([{ latest: true, percent: 90 }, { image_id: 7, percent: 10, tag: 'pin' }], { imageId: 9, noTraffic: true, tag: null, latestNow: 7 });
    expect(pinned).toEqual([{ image_id: 7, percent: 100, tag: 'pin' }]);
    expect(() => checkTraffic(pinned as never, 'shop.example.com', revs)).not.toThrow();
    // both tagged: one revision cannot carry both, and neither tag is dropped quietly
    expect(() => trafficAfterDeploy([{ image_id: 8, percent: 20 }, { latest: true, percent: 30, tag: 'main' }, { image_id: 7, percent: 50, tag: 'pin' }], { imageId: 9, noTraffic: true, tag: null, latestNow: 7 }))
      .toThrow(/already lists with tag "pin"; a revision has one tag/);
    expect(trafficAfterDeploy([{ image_id: 8, percent: 20 }, { latest: true, percent: 30 }, { image_id: 7, percent: 50, tag: 'pin' }], { imageId: 9, noTraffic: true, tag: null, latestNow: 7 }))
      .toEqual([{ image_id: 8, percent: 20 }, { image_id: 7, percent: 80, tag: 'pin' }]);
    expect(trafficAfterDeploy([{ latest: true, percent: 60, tag: 'main' }, { image_id: 7, percent: 40 }], { imageId: 9, noTraffic: true, tag: null, latestNow: 7 }))
      .toEqual([{ image_id: 7, percent: 100, tag: 'main' }]);
  });

  it('a tag moves to the new revision', () => {
    expect(trafficAfterDeploy([{ image_id: 1, percent: 100, tag: 'canary' }], { imageId: 2, noTraffic: true, tag: 'canary', latestNow: 1 }))
      .toEqual([{ image_id: 1, percent: 100 }, { image_id: 2, percent: 0, tag: 'canary' }]);
  });
});

describe('checkTraffic', () => {
  const revs = [rev(1, 1), rev(2, 2), rev(3, 3, 'building', false), rev(4, 4, 'ready', false, true), rev(5, 5, 'ready', false)];
  // the newest, scaling from zero (routable without a proof), never woken
  const fresh = [...revs, rev(6, 6, 'ready', true, false, false)];
  const bad = (entries: unknown[]) => {
    try { checkTraffic(entries as never, 'shop.example.com', revs); } catch (e) { return (e as Error).message; }
    return 'accepted';
  };
  it('names the entry at fault', () => {
    expect(bad([{ image_id: 1, percent: 60 }, { image_id: 2, percent: 30 }])).toMatch(/sum to 100, not 90/);
    expect(bad([{ image_id: 9, percent: 100 }])).toMatch(/traffic\[0\]: image 9 is not a revision/);
    expect(bad([{ image_id: 1, percent: 50 }, { image_id: 3, percent: 50 }])).toMatch(/traffic\[1\].*building/);
    // one that never served: no share (the app would go down with it), a tag to try it is fine
    expect(bad([{ image_id: 1, percent: 50 }, { image_id: 5, percent: 50 }])).toMatch(/traffic\[1\]: revision 5 \(image 5\) has not served yet/);
    expect(bad([{ image_id: 1, percent: 100 }, { image_id: 5, percent: 0, tag: 'try' }])).toBe('accepted');
    // one that scales from zero (routable without a proof) but never woke: the same, named or as
    // `latest`, unless it has that share already (a split stored before, sent again with a new tag)
    const check = (entries: TrafficEntry[], now?: Map<number, number>) => {
      try { return checkTraffic(entries, 'shop.example.com', fresh, now); } catch (e) { return (e as Error).message; }
    };
    expect(check([{ image_id: 6, percent: 100 }])).toMatch(/traffic\[0\]: revision 6 \(image 6\) has not served yet/);
    expect(check([{ image_id: 1, percent: 100 }, { image_id: 6, percent: 0, tag: 'try' }])).toEqual([{ image_id: 1, percent: 100 }, { image_id: 6, percent: 0, tag: 'try' }]);
    expect(check([{ latest: true, percent: 100 }])).toMatch(/traffic\[0\]: "latest" is revision 6 \(image 6\), which has not served yet/);
    expect(check([{ latest: true, percent: 100 }], new Map([[6, 100]]))).toEqual([{ latest: true, percent: 100 }]);
    expect(check([{ image_id: 6, percent: 50 }, { image_id: 1, percent: 50, tag: 'old' }], new Map([[6, 50], [1, 50]])))
      .toEqual([{ image_id: 6, percent: 50 }, { image_id: 1, percent: 50, tag: 'old' }]);
    expect(check([{ image_id: 6, percent: 60 }, { image_id: 1, percent: 40 }], new Map([[6, 50], [1, 50]]))).toMatch(/traffic\[0\]: revision 6 \(image 6\) has not served yet/);
    expect(bad([{ image_id: 1, percent: 50 }, { image_id: 4, percent: 50 }])).toMatch(/traffic\[1\]: revision 4 \(image 4\) could not start \(`berth apps shop\.example\.com` or GET \/api\/images\/4 says why\)/);
    expect(bad([{ image_id: 1, percent: 50 }, { image_id: 1, percent: 50 }])).toMatch(/traffic\[1\].*twice/);
    expect(bad([{ latest: true, percent: 50 }, { latest: true, percent: 50 }])).toMatch(/traffic\[1\].*latest/);
    expect(bad([{ percent: 100 }])).toMatch(/traffic\[0\] must name either/);
    expect(bad([{ image_id: 1, latest: true, percent: 100 }])).toMatch(/traffic\[0\] must name either/);
    expect(bad([{ image_id: 1, percent: 100, tag: 'a--b' }])).toMatch(/single hyphens/);
    expect(bad([{ image_id: 1, percent: 100, tag: 'x'.repeat(59) }])).toMatch(/longer than 63/);
    expect(bad([{ image_id: 1, percent: 50, tag: 'a' }, { image_id: 2, percent: 50, tag: 'a' }])).toMatch(/traffic\[1\].*used twice/);
    expect(bad([])).toMatch(/at least one/);
    expect(bad([{ image_id: 1, percent: 100 }, { latest: true, percent: 0 }])).toMatch(/traffic\[1\].*needs a tag/);
  });
  it('accepts a valid split', () => {
    expect(checkTraffic([{ image_id: 1, percent: 90 }, { latest: true, percent: 10, tag: 'edge' }], 'shop.example.com', revs))
      .toEqual([{ image_id: 1, percent: 90 }, { latest: true, percent: 10, tag: 'edge' }]);
  });
});

it('an app hostname may not look like another app\'s tag URL', () => {
  expect(() => checkAppHostname('canary---shop.example.com')).toThrow(/reserved for revision tag URLs/);
  expect(() => checkAppHostname('my-shop.example.com')).not.toThrow();
});

it('a tag host must be a valid hostname as a whole (one bad row would make every table invalid)', () => {
  const long = `a.${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(60)}.${'e'.repeat(63)}.com`; // 252 characters
  expect(long.length).toBe(252);
  expect(() => checkTag('t', long, 'tag')).toThrow(/not a valid hostname/);
});

describe('tag shape (shared/tag.ts, the rule the CLI checks too)', () => {
  it('letters, digits and single inner hyphens, starting with a letter', () => {
    for (const ok of ['canary', 'v2', 'blue-green', 'a']) expect(tagProblem(ok), ok).toBeNull();
    for (const bad of ['1canary', 'a--b', 'canary-', 'Canary', '', 'c_a', 'x'.repeat(64)]) expect(tagProblem(bad), bad).not.toBeNull();
    // TAG---LABEL is one DNS label (≤ 63): 59 + 3 + a one-character label; the schemas use the same bound
    expect(tagProblem('x'.repeat(TAG_MAX_LENGTH))).toBeNull();
    expect(tagProblem('x'.repeat(TAG_MAX_LENGTH + 1))).toMatch(/at most 59/);
    expect(TAG_MAX_LENGTH + 3 + 1).toBe(63);
  });
});
