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

/**
 * Text from apps and builds, made safe for a terminal: control characters (escape sequences that
 * could move the cursor, retitle the window or rewrite what was printed) become U+FFFD. Piped
 * output is left byte for byte.
 */
export function terminalSafe(out: NodeJS.WriteStream, text: string): string {
  // eslint-disable-next-line no-control-regex
  return out.isTTY ? text.replace(/[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]/g, '\ufffd') : text;
}
