import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { describe, expect, it } from 'vitest';
import { printBuildFailure } from '../../shared/client/commands/deploy.js';
import { BIN, built } from '../e2e/support.js';

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
    printBuildFailure(out, 'shop.localhost', 3, 1200, `RUN failed: ${EVIL}`, ['step 1', `boom ${EVIL}`]);
    expect(out.text).toContain('Build failed after');
    expect(out.text).toContain('boom copy\ufffd]52;c;cm0gLXJmIH4K\ufffd clear\ufffd[2J\ufffd[H c1\ufffd31m bell\ufffd');
    expect(out.text).toContain('RUN failed: copy\ufffd]52');
    expect(out.text).not.toMatch(/\x1b\]52|\x1b\[2J|\x9b|\x07/);
    expect(out.text).toContain('full log: berth logs shop.localhost --build --revision 3');
  });

  it('piped: byte for byte', () => {
    const out = stream(false);
    printBuildFailure(out, 'shop.localhost', 3, 1200, EVIL, [EVIL]);
    expect(out.text.split(EVIL)).toHaveLength(3);
  });
});

describe('an API error message', () => {
  it.skipIf(!built())('on a terminal (a pty via script): shown with its escape sequences defused', async () => {
    const server = createServer((_req, res) => {
      res.writeHead(409, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'conflict', message: `nope ${EVIL}` } }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const api = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      const out = await new Promise<string>((resolve) => {
        const c = spawn('script', ['-qfec', `${process.execPath} ${BIN} apps --api ${api}`, '/dev/null'], {
          env: { ...process.env, BERTH_TOKEN: 'berth_x', BERTH_CONFIG_DIR: '/nonexistent/berth-test', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
        });
        let text = '';
        c.stdout.on('data', (d) => { text += d; });
        c.stderr.on('data', (d) => { text += d; });
        c.on('exit', () => resolve(text));
      });
      expect(out).toContain('nope copy\ufffd]52;c;');
      expect(out).not.toMatch(/\x1b\]52|\x1b\[2J|\x07/);
    } finally {
      server.close();
    }
  });
});
