/**
 * How an instance's end is said (control-plane/reconcile/reconciler.ts exitReason): an exit code a
 * signal explains names it (from a walkthrough: "exited with code 137" after a docker kill).
 */
import { describe, expect, it } from 'vitest';
import { exitReason } from '../../control-plane/reconcile/reconciler.js';

describe('exitReason', () => {
  it('names the signal behind 128 + N, and leaves other codes as they are', () => {
    expect(exitReason(3)).toBe('exited with code 3');
    expect(exitReason(137)).toBe('exited with code 137, killed by SIGKILL');
    expect(exitReason(143)).toBe('exited with code 143, terminated by SIGTERM');
    expect(exitReason(139)).toBe('exited with code 139, segmentation fault (SIGSEGV)');
    expect(exitReason(200)).toBe('exited with code 200');
    expect(exitReason(null)).toBe('exited with code unknown');
  });
});
