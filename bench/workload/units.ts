/** A latency as `berth load` prints it: `0.42ms`, `25.0ms`, `1.25s` (— when there is none). */
export const msText = (v: number | null): string => (v === null ? '—' : v < 10 ? `${v.toFixed(2)}ms` : v < 1000 ? `${v.toFixed(1)}ms` : `${(v / 1000).toFixed(2)}s`);
