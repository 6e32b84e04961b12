/**
 * Build output of one image while it builds: capped (the tail is kept, and the text says that
 * the head was cut), with live subscribers for `?follow=1`.
 */
export class BuildLog {
  private chunks: string[] = [];
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
    this.size += Buffer.byteLength(text);
    // drop whole chunks from the head, then trim the first kept one so exactly `cap` bytes remain
    while (this.size > this.cap) {
      const head = Buffer.from(this.chunks[0]);
      const excess = this.size - this.cap;
      if (head.length <= excess) {
        this.chunks.shift();
        this.size -= head.length;
        this.cutBytes += head.length;
      } else {
        let start = excess;
        while (start < head.length && (head[start] & 0xc0) === 0x80) start++; // keep UTF-8 characters whole
        this.chunks[0] = head.subarray(start).toString();
        this.size -= start;
        this.cutBytes += start;
      }
    }
    this.dirty = true;
    for (const l of this.listeners) l(text);
  }

  get truncated(): boolean {
    return this.cutBytes > 0;
  }

  /** The kept text, with a first line saying how much was cut when the cap was hit. */
  text(): string {
    const body = this.chunks.join('');
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
