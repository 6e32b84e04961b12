import { describe, expect, it } from 'vitest';
import { printBuildFailure } from '../../shared/client/commands/deploy.js';

/** What the client prints from the server, on a terminal and piped. */

function stream(isTTY: boolean): NodeJS.WriteStream & { text: string } {
  const s = { isTTY, text: '', write(chunk: string) { s.text += chunk; return true; } };
  return s as unknown as NodeJS.WriteStream & { text: string };
}

// OSC 52 (write the clipboard), a CSI that clears the screen, a C1 CSI, a BEL
const EVIL = 'copy\x1b]52;c;cm0gLXJmIH4K\x07 clear\x1b[2J\x1b[H c1\x9b31m bell\x07';

describe('a failed build', () => {
  it('on a terminal: the reason and the log tail have their escape sequences defused', () => {
    const out = stream(true);
    printBuildFailure(out, 7, 1200, `RUN failed: ${EVIL}`, ['step 1', `boom ${EVIL}`]);
    expect(out.text).toContain('Build failed after');
    expect(out.text).toContain('boom copy\ufffd]52;c;cm0gLXJmIH4K\ufffd clear\ufffd[2J\ufffd[H c1\ufffd31m bell\ufffd');
    expect(out.text).toContain('RUN failed: copy\ufffd]52');
    expect(out.text).not.toMatch(/\x1b\]52|\x1b\[2J|\x9b|\x07/);
    expect(out.text).toContain('GET /api/images/7/build-logs');
  });

  it('piped: byte for byte', () => {
    const out = stream(false);
    printBuildFailure(out, 7, 1200, EVIL, [EVIL]);
    expect(out.text.split(EVIL)).toHaveLength(3);
  });
});
