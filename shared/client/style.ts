/**
 * Colour for client output: only on a terminal, and never when NO_COLOR is set
 * (https://no-color.org) or FORCE_COLOR=0.
 */
const CODES = { red: [31, 39], green: [32, 39], yellow: [33, 39], cyan: [36, 39], dim: [2, 22], bold: [1, 22] } as const;

export function colours(out: NodeJS.WriteStream): boolean {
  if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') return false;
  if (process.env.FORCE_COLOR === '0') return false;
  return Boolean(out.isTTY);
}

export function paint(out: NodeJS.WriteStream, style: keyof typeof CODES, text: string): string {
  if (!colours(out)) return text;
  const [on, off] = CODES[style];
  return `\x1b[${on}m${text}\x1b[${off}m`;
}

/** C0 controls but tab and newline, DEL, and the C1 controls (0x9b is a one-byte CSI). */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]/g;

/**
 * A field that came from the API (a name, a hostname, a reason, an error message) for output a
 * person reads: control characters (escape sequences that could move the cursor, retitle the
 * window, write the clipboard or rewrite what was printed) become U+FFFD, on a terminal or piped,
 * since a file or a CI log is read on a terminal later. Tab and newline stay. Machine output
 * (--json) is JSON, which escapes them itself.
 */
export function printable(text: string): string {
  return text.replace(CONTROL, '\ufffd');
}

/** A number from the server as text: itself, or (a hostile server's string) made printable. */
export function num(x: unknown): string {
  return typeof x === 'number' && Number.isFinite(x) ? String(x) : printable(String(x));
}

/**
 * Text from apps and builds (logs, build output), made safe for a terminal like `printable`.
 * Piped output is left byte for byte: it is the app's own output, and a file of it should be exact.
 */
export function terminalSafe(out: NodeJS.WriteStream, text: string): string {
  return out.isTTY ? printable(text) : text;
}
