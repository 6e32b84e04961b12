/**
 * The verdict on a revision that never served (control-plane/apps/start-failure.ts): given up on
 * at the third exit of an instance's app by its own doing (counted by containers/service.ts,
 * however long each run lasted), or when an instance has run past the start deadline since it
 * last started with its health check, run since that start, failing, or when none of its
 * instances could be made (the container quota full) past the deadline; never for what is not seen.
 */
import { expect, it } from 'vitest';
import { blockedVerdict, startFailureText, startVerdict, type StartAttempt } from '../../control-plane/apps/start-failure.js';

const NOW = Date.parse('2026-12-03T12:00:00Z');
const at = (msAgo: number) => new Date(NOW - msAgo);
const inst = (over: Partial<StartAttempt>): StartAttempt => ({
  id: 7, status: 'running', status_reason: null, health: 'unknown', app_exits: 0, last_exit: null, started_at: at(1000), health_checked_at: null, ...over,
});

it('the third exit of its app gives it up, with the last reason and how many times; two do not', () => {
  expect(startVerdict([inst({ status: 'exited', app_exits: 2, last_exit: 'exited with code 3' })], NOW, 600_000)).toBeNull();
  // (running again after its third exit: the count says it, not a status caught between two runs)
  const v = startVerdict([inst({ id: 8 }), inst({ status: 'running', app_exits: 3, last_exit: 'exited with code 3' })], NOW, 600_000);
  expect([v?.instance.id, v?.reason]).toEqual([7, 'exited with code 3, 3 times at start']);
  // the output note stays last
  expect(startVerdict([inst({ status: 'failed', app_exits: 3, last_exit: 'container exited at once (exit code 1); its last output: boom' })], NOW, 600_000)?.reason)
    .toBe('container exited at once (exit code 1), 3 times at start; its last output: boom');
  expect(startVerdict([inst({ app_exits: 4, last_exit: 'exited with code 1; its last output: a ⏎ b' })], NOW, 600_000)?.reason)
    .toBe('exited with code 1, 4 times at start; its last output: a ⏎ b');
});

it('an instance running past the deadline, probed unhealthy since it started, gives it up (its reason said); unprobed or younger does not', () => {
  const failing = { health: 'unhealthy' as const, status_reason: 'health check failed: connect ECONNREFUSED 127.0.0.1:8080' };
  expect(startVerdict([inst({ ...failing, started_at: at(599_000), health_checked_at: at(1000) })], NOW, 600_000)).toBeNull();
  const v = startVerdict([inst({ id: 9, ...failing, started_at: at(30_000), health_checked_at: at(1000) }), inst({ ...failing, started_at: at(600_000), health_checked_at: at(1000) })], NOW, 600_000);
  expect([v?.instance.id, v?.reason]).toEqual([7, 'no instance became healthy within 600 s (health check failed: connect ECONNREFUSED 127.0.0.1:8080)']);
  // a control plane back after an outage: nothing probed since the start, nothing judged
  expect(startVerdict([inst({ ...failing, started_at: at(3_600_000), health_checked_at: at(3_700_000) })], NOW, 600_000)).toBeNull();
  expect(startVerdict([inst({ health: 'unknown', started_at: at(3_600_000), health_checked_at: null })], NOW, 600_000)).toBeNull();
  // a stuck creating or an exited instance is not running
  expect(startVerdict([inst({ ...failing, status: 'creating', started_at: null, health_checked_at: at(1000) })], NOW, 600_000)).toBeNull();
});

it('none of its instances could be made since the deadline gives it up, with why; younger or never blocked does not', () => {
  const why = 'the per-user container quota is full: you have 20 running container(s) of the 20 allowed; stop or delete some first';
  expect(blockedVerdict(at(599_000), why, NOW, 600_000)).toBeNull();
  expect(blockedVerdict(null, null, NOW, 600_000)).toBeNull();
  expect(blockedVerdict(at(600_000).toISOString(), why, NOW, 600_000)).toBe(`no instance could be started within 600 s (${why})`);
});

it('the stored reason: control characters out, bounded', () => {
  expect(startFailureText('bad\x1b[2J\r\nreason')).toBe('bad [2J  reason');
  expect(startFailureText('y'.repeat(5000)).length).toBe(1000);
});
