/**
 * The verdict on a revision that never served (control-plane/apps/start-failure.ts): given up on
 * at the third exit at start by its own doing, or when an instance has run past the start
 * deadline without passing its health check; never for the platform's troubles.
 */
import { expect, it } from 'vitest';
import { startFailureText, startVerdict, type StartAttempt } from '../../control-plane/apps/start-failure.js';

const NOW = Date.parse('2026-12-03T12:00:00Z');
const at = (msAgo: number) => new Date(NOW - msAgo);
const inst = (over: Partial<StartAttempt>): StartAttempt => ({ id: 7, status: 'running', status_reason: null, restart_count: 0, docker_id: 'd1', started_at: at(1000), ...over });

it('the third exit at start gives it up, with the reason and how many times; two do not', () => {
  expect(startVerdict([inst({ status: 'exited', status_reason: 'exited with code 3', restart_count: 1 })], NOW, 600_000)).toBeNull();
  const v = startVerdict([inst({ id: 8, status: 'running', restart_count: 0 }), inst({ status: 'exited', status_reason: 'exited with code 3', restart_count: 2 })], NOW, 600_000);
  expect(v?.instance.id).toBe(7);
  expect(v?.reason).toBe('exited with code 3, 3 times at start');
  expect(startVerdict([inst({ status: 'exited', status_reason: 'out of memory', restart_count: 4 })], NOW, 600_000)?.reason).toBe('out of memory, 5 times at start');
  // exited as Docker started it: its output note stays last
  expect(startVerdict([inst({ status: 'failed', status_reason: 'container exited at once (exit code 1); its last output: boom', restart_count: 2 })], NOW, 600_000)?.reason)
    .toBe('container exited at once (exit code 1), 3 times at start; its last output: boom');
  // a command not in the image cannot run either
  expect(startVerdict([inst({ status: 'failed', status_reason: 'OCI runtime create failed: exec: "srv": executable file not found in $PATH', restart_count: 2 })], NOW, 600_000)).not.toBeNull();
});

it('the platform\'s troubles are not the revision\'s: Docker away, a port taken, a container removed by hand', () => {
  for (const status_reason of ['Docker is unavailable: connect ENOENT /var/run/docker.sock', 'Bind for 127.0.0.1:40000 failed: port is already allocated']) {
    expect(startVerdict([inst({ status: 'failed', status_reason, restart_count: 5 })], NOW, 600_000)).toBeNull();
  }
  expect(startVerdict([inst({ status: 'exited', status_reason: 'container vanished', restart_count: 5 })], NOW, 600_000)).toBeNull();
  // and a stuck creating instance is the platform's too, however old
  expect(startVerdict([inst({ status: 'creating', started_at: null })], NOW, 600_000)).toBeNull();
});

it('an instance running past the deadline without a passing health check gives it up (its reason said); one younger does not', () => {
  expect(startVerdict([inst({ started_at: at(599_000), status_reason: 'connect ECONNREFUSED' })], NOW, 600_000)).toBeNull();
  const v = startVerdict([inst({ id: 9, started_at: at(30_000) }), inst({ started_at: at(600_000), status_reason: 'health check failed: connect ECONNREFUSED 127.0.0.1:8080' })], NOW, 600_000);
  expect([v?.instance.id, v?.reason]).toEqual([7, 'no instance became healthy within 600 s (health check failed: connect ECONNREFUSED 127.0.0.1:8080)']);
  expect(startVerdict([inst({ started_at: at(700_000).toISOString() })], NOW, 600_000)?.reason).toBe('no instance became healthy within 600 s (its health check never passed)');
});

it('the stored reason: output read from Docker as a note (unless the reason has one), control characters out, bounded', () => {
  expect(startFailureText('exited with code 3, 3 times at start', ['starting', 'DATABASE_URL is not set'])).toBe('exited with code 3, 3 times at start; its last output: starting ⏎ DATABASE_URL is not set');
  expect(startFailureText('x, 3 times at start; its last output: a', ['b'])).toBe('x, 3 times at start; its last output: a');
  expect(startFailureText('bad\x1b[2J\r\nreason', [])).toBe('bad [2J  reason');
  expect(startFailureText('y'.repeat(5000), []).length).toBe(1000);
});
