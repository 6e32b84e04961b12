import { describe, expect, it } from 'vitest';
import { serviceId, staleServiceIds } from '../../control-plane/relay/consul.js';

describe('Consul service ids are scoped to the berth cluster', () => {
  it('ids carry the cluster id', () => {
    expect(serviceId('abc123', 7)).toBe('berth-abc123-c7');
    expect(serviceId('abc123', 7)).not.toBe(serviceId('def456', 7));
  });

  it('only this cluster\'s unwanted services are deregistered', () => {
    const mine = (id: number, cluster = 'abc123') => ({ ID: serviceId(cluster, id), Meta: { cluster } });
    const existing = {
      [serviceId('abc123', 1)]: mine(1),                    // wanted: keep
      [serviceId('abc123', 2)]: mine(2),                    // stale: deregister
      [serviceId('def456', 2)]: mine(2, 'def456'),          // another cluster's container 2: leave
      'berth-c3': { ID: 'berth-c3', Meta: {} },             // old unscoped id: could be anyone's, leave
      'berth-abc123-c4': { ID: 'berth-abc123-c4', Meta: { cluster: 'other' } }, // prefix but not ours
      'web': { ID: 'web', Meta: null },
    };
    expect(staleServiceIds(existing, 'abc123', new Set([serviceId('abc123', 1)]))).toEqual([serviceId('abc123', 2)]);
    expect(staleServiceIds(existing, 'def456', new Set())).toEqual([serviceId('def456', 2)]);
  });
});
