/**
 * How an instance's end is said (control-plane/containers/exit-reason.ts): an exit code a
 * signal explains names it (from a walkthrough: "exited with code 137" after a docker kill).
 */
import { describe, expect, it } from 'vitest';
import { exitReason, signalNote } from '../../control-plane/containers/exit-reason.js';

describe('exitReason', () => {
  it('names the signal behind 128 + N, and leaves other codes as they are', () => {
    expect(exitReason(3)).toBe('exited with code 3');
    expect(exitReason(137)).toBe('exited with code 137, killed by SIGKILL');
    expect(exitReason(143)).toBe('exited with code 143, terminated by SIGTERM');
    expect(exitReason(139)).toBe('exited with code 139, segmentation fault (SIGSEGV)');
    expect(exitReason(200)).toBe('exited with code 200');
    expect(exitReason(null)).toBe('exited with code unknown');
    // (an instance that exited as Docker started it: the same note in its own words)
    expect([signalNote(137), signalNote(3), signalNote(null)]).toEqual([', killed by SIGKILL', '', '']);
  });
});
