/**
 * `berth apps` (shared/client/commands/apps.ts): one row per revision that serves, is tagged or
 * is the newest (every revision with --all), and an app being deleted says so.
 */
import { describe, expect, it } from 'vitest';
import { appsTable, type App } from '../../shared/client/commands/apps.js';

const rev = (revision: number, traffic_percent: number, traffic_tag: string | null = null) => ({
  image_id: 10 + revision, revision, status: 'ready', instances: 1, ready_instances: 1, traffic_percent, traffic_tag, tag_url: null,
});
const shop: App = {
  app_hostname: 'shop.localhost', url: 'http://shop.localhost/', traffic: [],
  revisions: [rev(1, 90), rev(2, 0), rev(3, 0, 'canary'), rev(4, 10)],
};

describe('berth apps', () => {
  it('lists revisions with traffic, a tag, or the newest; --all lists every one', () => {
    const lines = appsTable([shop], false).trimEnd().split('\n');
    expect(lines[0]).toMatch(/^HOST\s+REVISION\s+STATUS\s+INSTANCES\s+TRAFFIC$/);
    expect(lines.slice(1).map((l) => l.match(/(\d+) \(image/)![1])).toEqual(['4', '3', '1']);
    expect(lines[1]).toMatch(/^shop\.localhost\s+4 \(image 14\)/);
    expect(lines[2]).toMatch(/^\s+3 \(image 13\).*0%\s+tag canary$/);
    expect(appsTable([shop], true).trimEnd().split('\n')).toHaveLength(5);
  });

  it('a revision the control plane gave up says it could not start', () => {
    const failed = { ...shop, revisions: [rev(1, 100), { ...rev(2, 0), start_failure: 'exited with code 3, 3 times at start' }] };
    const lines = appsTable([failed], false).trimEnd().split('\n');
    expect(lines[1]).toMatch(/^shop\.localhost\s+2 \(image 12\)\s+could not start\s+1\/1\s+0%$/);
    expect(lines[2]).toMatch(/^\s+1 \(image 11\)\s+ready\s/);
  });

  it('a revision being proven before it takes the traffic says it is starting', () => {
    const lines = appsTable([{ ...shop, revisions: [rev(1, 100), { ...rev(2, 0), proving: true, ready_instances: 0 }] }], false).trimEnd().split('\n');
    expect(lines[1]).toMatch(/^shop\.localhost\s+2 \(image 12\)\s+starting\s+0\/1\s+0%$/);
    expect(lines[2]).toMatch(/^\s+1 \(image 11\)\s+ready\s/);
  });

  it('the deploy waiting to take the traffic (min_instances 1 or more) says it is starting', () => {
    const lines = appsTable([{ ...shop, pending_image_id: 12, revisions: [rev(1, 100), { ...rev(2, 0), ready_instances: 0 }] }], false).trimEnd().split('\n');
    expect(lines[1]).toMatch(/^shop\.localhost\s+2 \(image 12\)\s+starting\s+0\/1\s+0%$/);
    expect(lines[2]).toMatch(/^\s+1 \(image 11\)\s+ready\s/);
  });

  it('the deploy waiting to take the traffic says building until it is built (from a walkthrough: it said starting)', () => {
    const lines = appsTable([{ ...shop, pending_image_id: 12, revisions: [rev(1, 100), { ...rev(2, 0), status: 'building', instances: 0, ready_instances: 0 }] }], false).trimEnd().split('\n');
    expect(lines[1]).toMatch(/^shop\.localhost\s+2 \(image 12\)\s+building\s+0\/0\s+0%$/);
  });

  it('one only some of whose instances can be made serves with them: its status is not "quota full" (from a walkthrough)', () => {
    const lines = appsTable([{ ...shop, revisions: [{ ...rev(1, 100), instances: 3, ready_instances: 3, start_blocked: 'the per-user container quota is full: 3 of its 4 instances can run; …' }] }], false).trimEnd().split('\n');
    expect(lines[1]).toMatch(/^shop\.localhost\s+1 \(image 11\)\s+ready\s+3\/3\s+100%$/);
  });

  it('a revision none of whose instances can be made says the quota is full', () => {
    const lines = appsTable([{ ...shop, revisions: [rev(1, 100), { ...rev(2, 0), proving: true, instances: 0, ready_instances: 0, start_blocked: 'the per-user container quota is full: …' }] }], false).trimEnd().split('\n');
    expect(lines[1]).toMatch(/^shop\.localhost\s+2 \(image 12\)\s+quota full\s+0\/0\s+0%$/);
  });

  it('marks an app being deleted', () => {
    const out = appsTable([{ ...shop, deleting_at: '2026-12-01T03:00:00.000Z' }, { ...shop, app_hostname: 'b.localhost' }], false);
    expect(out).toContain('shop.localhost (deleting)');
    expect(out).not.toContain('b.localhost (deleting)');
  });
});
