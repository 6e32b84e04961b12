/**
 * An instance that exits as Docker starts it is removed at once, with its log: the control plane
 * keeps its last lines in the reason (containers/service.ts lastOutputNote), which `berth deploy`
 * shows as its output. The app writes them: control characters never reach the reason.
 */
import { expect, it } from 'vitest';
import { lastOutputNote } from '../../control-plane/containers/service.js';

it('an exited instance\'s last lines as a note on its reason: joined, control characters out, bounded', () => {
  expect(lastOutputNote([])).toBe('');
  expect(lastOutputNote(['', '  '])).toBe('');
  expect(lastOutputNote(['starting', 'config: DATABASE_URL is not set'])).toBe('; its last output: starting ⏎ config: DATABASE_URL is not set');
  expect(lastOutputNote(['\x1b]52;c;cm0=\x07boom\x1b[2J'])).toBe('; its last output: ]52;c;cm0= boom [2J');
  const long = lastOutputNote(['x'.repeat(5000)]);
  expect(long.length).toBeLessThan(640);
  expect(long).toMatch(/^; its last output: …x+$/);
});
