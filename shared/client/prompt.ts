import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';

/**
 * Questions for `berth login`. On a terminal: a prompt on stderr, the password not echoed.
 * Piped (scripts, tests): lines are read from stdin in order, no prompt text.
 */
export class Prompter {
  private lines: string[] = [];
  private waiting: ((line: string | undefined) => void)[] = [];
  private ended = false;
  private reading = false;

  constructor(private readonly input: NodeJS.ReadStream = process.stdin, private readonly output: NodeJS.WriteStream = process.stderr) {}

  get interactive(): boolean {
    return Boolean(this.input.isTTY);
  }

  async ask(question: string): Promise<string | undefined> {
    if (this.interactive) return this.askTty(question, false);
    return this.nextLine();
  }

  async askSecret(question: string): Promise<string | undefined> {
    if (this.interactive) return this.askTty(question, true);
    return this.nextLine();
  }

  close(): void {
    if (this.reading) this.input.pause();
  }

  private askTty(question: string, secret: boolean): Promise<string | undefined> {
    return new Promise((resolve) => {
      const out = this.output;
      let muted = false;
      const rl = createInterface({
        input: this.input,
        output: new Writable({ write(chunk: Buffer, _enc, cb) { if (!muted) out.write(chunk); cb(); } }),
        terminal: true,
      });
      rl.question(question, (answer) => {
        resolve(answer); // before close(): its 'close' event would settle the question as unanswered
        if (secret) out.write('\n');
        rl.close();
      });
      muted = secret;
      rl.on('close', () => resolve(undefined));
      rl.on('SIGINT', () => { rl.close(); out.write('\n'); process.exit(130); });
    });
  }

  private nextLine(): Promise<string | undefined> {
    if (this.lines.length) return Promise.resolve(this.lines.shift());
    if (this.ended) return Promise.resolve(undefined);
    if (!this.reading) {
      this.reading = true;
      let buf = '';
      this.input.setEncoding('utf8');
      this.input.on('data', (c: string) => {
        buf += c;
        let i: number;
        while ((i = buf.indexOf('\n')) !== -1) {
          this.push(buf.slice(0, i).replace(/\r$/, ''));
          buf = buf.slice(i + 1);
        }
      });
      this.input.on('end', () => {
        if (buf) this.push(buf);
        buf = '';
        this.ended = true;
        for (const w of this.waiting.splice(0)) w(undefined);
      });
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private push(line: string): void {
    const w = this.waiting.shift();
    if (w) w(line);
    else this.lines.push(line);
  }
}

