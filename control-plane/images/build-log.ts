/**
 * Build output of one image while it builds: capped (the tail is kept, and the text says that
 * the head was cut), with live subscribers for `?follow=1`.
 */
export class BuildLog {
  /** kept chunks from `first` on, with their UTF-8 sizes (a head index, not shift(): a flood of tiny chunks stays linear) */
  private chunks: string[] = [];
  private bytes: number[] = [];
  private first = 0;
  private size = 0;
  private cutBytes = 0;
  private listeners = new Set<(text: string) => void>();
  private endListeners = new Set<(status: string) => void>();
  dirty = false;
  ended: string | undefined;

  constructor(private readonly cap: number, initial = '') {
    if (initial) this.append(initial);
  }

  append(text: string): void {
    if (!text) return;
    this.chunks.push(text);
    const n = Buffer.byteLength(text);
    this.bytes.push(n);
    this.size += n;
    if (this.size > this.cap) this.trim();
    this.dirty = true;
    for (const l of this.listeners) l(text);
  }

  /**
   * Drop whole chunks from the head, then cut the first kept one — an eighth of the cap more than
   * needed, so a big head chunk is not copied again at every small append (amortised linear).
   */
  private trim(): void {
    const slack = this.cap >> 3;
    while (this.size > this.cap && this.first < this.chunks.length) {
      const excess = this.size - this.cap;
      const len = this.bytes[this.first];
      if (len <= excess + slack) {
        this.size -= len;
        this.cutBytes += len;
        this.chunks[this.first] = '';
        this.first++;
        continue;
      }
      const head = Buffer.from(this.chunks[this.first]);
      let start = Math.min(head.length, excess + slack);
      while (start < head.length && (head[start] & 0xc0) === 0x80) start++; // keep UTF-8 characters whole
      this.chunks[this.first] = head.subarray(start).toString();
      this.bytes[this.first] = head.length - start;
      this.size -= start;
      this.cutBytes += start;
    }
    if (this.first > 1024 && this.first * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.first);
      this.bytes = this.bytes.slice(this.first);
      this.first = 0;
    }
  }

  get truncated(): boolean {
    return this.cutBytes > 0;
  }

  /** The kept text, with a first line saying how much was cut when the cap was hit. */
  text(): string {
    const body = (this.first ? this.chunks.slice(this.first) : this.chunks).join('');
    return this.cutBytes ? `[berth: ${this.cutBytes} bytes of earlier build output were cut; showing the last ${this.size} bytes]\n${body}` : body;
  }

  subscribe(onText: (text: string) => void, onEnd: (status: string) => void): () => void {
    this.listeners.add(onText);
    this.endListeners.add(onEnd);
    return () => { this.listeners.delete(onText); this.endListeners.delete(onEnd); };
  }

  end(status: string): void {
    this.ended = status;
    for (const l of this.endListeners) l(status);
    this.listeners.clear();
    this.endListeners.clear();
  }
}
