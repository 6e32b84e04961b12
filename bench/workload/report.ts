/**
 * The workload report: one self-contained HTML file (inline CSS and SVG, no script, no network):
 * summary tiles, target vs achieved rate, latency percentiles over time, the latency distribution
 * (percentile spectrum, as HdrHistogram plots it), status codes, errors and the config.
 * Every value from the run is escaped; nothing in the file is fetched.
 */
import type { SeriesPoint, WorkloadMetrics } from './metrics.js';

export interface ReportInput {
  title: string;
  config: Record<string, unknown>;
  metrics: WorkloadMetrics;
  /** running | completed | stopped | failed (API runs) */
  status?: string;
  status_reason?: string | null;
}

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const num = (n: number | null | undefined, d = 0) => (n === null || n === undefined || !Number.isFinite(n) ? '—' : n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: 0 }));
const msText = (v: number | null | undefined) => (v === null || v === undefined ? '—' : v < 10 ? `${v.toFixed(2)} ms` : v < 1000 ? `${v.toFixed(1)} ms` : `${(v / 1000).toFixed(2)} s`);

const W = 880, H = 280, ML = 64, MR = 20, MT = 16, MB = 40;

interface Line {
  name: string;
  color: string;
  points: [number, number | null][];
  dash?: boolean;
}

/** A "nice" axis maximum and tick step for [0, max]. */
function niceTicks(max: number, count = 5): { top: number; step: number } {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  return { top: Math.ceil(max / step) * step, step };
}

function fmtTick(v: number): string {
  if (v >= 1_000_000) return `${+(v / 1_000_000).toFixed(1)}M`;
  if (v >= 10_000) return `${+(v / 1000).toFixed(1)}k`;
  return `${+v.toFixed(3)}`;
}

function lineChart(id: string, lines: Line[], opts: { xMax: number; xLabel: string; yLabel: string; bars?: { name: string; color: string; points: [number, number][] } }): string {
  let yMax = 0;
  for (const l of lines) for (const [, y] of l.points) if (y !== null && y > yMax) yMax = y;
  if (opts.bars) for (const [, y] of opts.bars.points) if (y > yMax) yMax = y;
  const { top, step } = niceTicks(yMax);
  const xMax = Math.max(opts.xMax, 1);
  const px = (x: number) => ML + (x / xMax) * (W - ML - MR);
  const py = (y: number) => MT + (1 - y / top) * (H - MT - MB);
  const parts: string[] = [];
  for (let v = 0; v <= top + step / 2; v += step) {
    parts.push(`<line x1="${ML}" x2="${W - MR}" y1="${py(v).toFixed(1)}" y2="${py(v).toFixed(1)}" class="grid"/>`);
    parts.push(`<text x="${ML - 6}" y="${(py(v) + 4).toFixed(1)}" text-anchor="end" class="tick">${fmtTick(v)}</text>`);
  }
  const xStep = niceTicks(xMax, 8).step;
  for (let x = 0; x <= xMax + 1e-9; x += xStep) {
    parts.push(`<text x="${px(x).toFixed(1)}" y="${H - MB + 16}" text-anchor="middle" class="tick">${fmtTick(x)}</text>`);
  }
  parts.push(`<text x="${(ML + W - MR) / 2}" y="${H - 6}" text-anchor="middle" class="axis">${esc(opts.xLabel)}</text>`);
  parts.push(`<text x="14" y="${(MT + H - MB) / 2}" text-anchor="middle" class="axis" transform="rotate(-90 14 ${(MT + H - MB) / 2})">${esc(opts.yLabel)}</text>`);
  if (opts.bars) {
    const bw = Math.max(1, ((W - ML - MR) / xMax) * 0.6);
    for (const [x, y] of opts.bars.points) {
      if (y <= 0) continue;
      parts.push(`<rect class="bar" x="${(px(x + 0.5) - bw / 2).toFixed(1)}" y="${py(y).toFixed(1)}" width="${bw.toFixed(1)}" height="${(py(0) - py(y)).toFixed(1)}" fill="${opts.bars.color}"><title>${esc(opts.bars.name)} at ${x}s: ${num(y)}</title></rect>`);
    }
  }
  for (const l of lines) {
    let d = '';
    let pen = false;
    for (const [x, y] of l.points) {
      if (y === null) { pen = false; continue; }
      d += `${pen ? 'L' : 'M'}${px(x).toFixed(1)},${py(y).toFixed(1)}`;
      pen = true;
    }
    if (d) parts.push(`<path class="line" d="${d}" stroke="${l.color}"${l.dash ? ' stroke-dasharray="6 4"' : ''}><title>${esc(l.name)}</title></path>`);
    if (l.points.length <= 120) {
      for (const [x, y] of l.points) if (y !== null) parts.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="2.2" fill="${l.color}"><title>${esc(l.name)} at ${x}s: ${num(y, 3)}</title></circle>`);
    }
  }
  const legend = [...lines.map((l) => [l.name, l.color, l.dash] as const), ...(opts.bars ? [[opts.bars.name, opts.bars.color, false] as const] : [])]
    .map(([n, c, dash]) => `<span class="key"><svg width="22" height="10"><line x1="0" x2="22" y1="5" y2="5" stroke="${c}" stroke-width="3"${dash ? ' stroke-dasharray="5 3"' : ''}/></svg>${esc(n)}</span>`).join('');
  return `<svg id="${id}" class="chart" data-chart="${id}" viewBox="0 0 ${W} ${H}" role="img" xmlns="http://www.w3.org/2000/svg">${parts.join('')}</svg><div class="legend">${legend}</div>`;
}

/** Percentile spectrum: x = "nines" (log10 of 1 / (1 − p)), y = latency. */
function distributionChart(m: WorkloadMetrics): string {
  const pts = m.latency_distribution.filter((d) => d.percentile < 100);
  const maxNines = 5;
  const nines = (p: number) => Math.min(maxNines, -Math.log10(1 - p / 100));
  let yMax = 0;
  for (const d of pts) yMax = Math.max(yMax, d.ms);
  const { top, step } = niceTicks(yMax);
  const px = (x: number) => ML + (x / maxNines) * (W - ML - MR);
  const py = (y: number) => MT + (1 - y / top) * (H - MT - MB);
  const parts: string[] = [];
  for (let v = 0; v <= top + step / 2; v += step) {
    parts.push(`<line x1="${ML}" x2="${W - MR}" y1="${py(v).toFixed(1)}" y2="${py(v).toFixed(1)}" class="grid"/>`);
    parts.push(`<text x="${ML - 6}" y="${(py(v) + 4).toFixed(1)}" text-anchor="end" class="tick">${fmtTick(v)}</text>`);
  }
  for (const [x, label] of [[0, '0%'], [1, '90%'], [2, '99%'], [3, '99.9%'], [4, '99.99%'], [5, '99.999%']] as const) {
    parts.push(`<line x1="${px(x).toFixed(1)}" x2="${px(x).toFixed(1)}" y1="${MT}" y2="${H - MB}" class="grid"/>`);
    parts.push(`<text x="${px(x).toFixed(1)}" y="${H - MB + 16}" text-anchor="${x === maxNines ? 'end' : 'middle'}" class="tick">${label}</text>`);
  }
  parts.push(`<text x="${(ML + W - MR) / 2}" y="${H - 6}" text-anchor="middle" class="axis">percentile</text>`);
  parts.push(`<text x="14" y="${(MT + H - MB) / 2}" text-anchor="middle" class="axis" transform="rotate(-90 14 ${(MT + H - MB) / 2})">latency (ms)</text>`);
  let d = '';
  for (const p of pts) d += `${d ? 'L' : 'M'}${px(nines(p.percentile)).toFixed(1)},${py(p.ms).toFixed(1)}`;
  if (d) parts.push(`<path class="line" d="${d}" stroke="#7c3aed"><title>latency by percentile</title></path>`);
  for (const p of pts) parts.push(`<circle cx="${px(nines(p.percentile)).toFixed(1)}" cy="${py(p.ms).toFixed(1)}" r="3" fill="#7c3aed"><title>p${p.percentile}: ${esc(msText(p.ms))}</title></circle>`);
  return `<svg id="latency-distribution" class="chart" data-chart="latency-distribution" viewBox="0 0 ${W} ${H}" role="img" xmlns="http://www.w3.org/2000/svg">${parts.join('')}</svg>`;
}

function statusChart(m: WorkloadMetrics): string {
  const entries: [string, number, string][] = Object.entries(m.status_code_distribution).map(([k, v]) => [k, v, Number(k) >= 500 ? '#dc2626' : Number(k) >= 400 ? '#f59e0b' : '#16a34a']);
  for (const [k, v] of Object.entries(m.errors)) entries.push([k, v, '#991b1b']);
  if (entries.length === 0) return '<p class="muted">no responses</p>';
  const max = Math.max(...entries.map((e) => e[1]));
  const rowH = 26, h = entries.length * rowH + 10, left = 150, right = 110;
  const parts = entries.map(([k, v, c], i) => {
    const w = Math.max(1, ((W - left - right) * v) / max);
    const y = 5 + i * rowH;
    return `<text x="${left - 8}" y="${y + 17}" text-anchor="end" class="tick">${esc(k)}</text><rect class="bar" x="${left}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${c}"><title>${esc(k)}: ${num(v)}</title></rect><text x="${(left + w + 6).toFixed(1)}" y="${y + 17}" class="tick">${num(v)} (${((100 * v) / Math.max(1, m.total_requests)).toFixed(2)}%)</text>`;
  });
  return `<svg id="status-codes" class="chart" data-chart="status-codes" viewBox="0 0 ${W} ${h}" role="img" xmlns="http://www.w3.org/2000/svg">${parts.join('')}</svg>`;
}

function tile(label: string, value: string, cls = ''): string {
  return `<div class="tile ${cls}"><div class="v">${esc(value)}</div><div class="l">${esc(label)}</div></div>`;
}

function configRows(config: Record<string, unknown>): string {
  return Object.entries(config)
    .filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td><code>${esc(typeof v === 'object' ? JSON.stringify(v) : v)}</code></td></tr>`).join('');
}

export function renderReport(r: ReportInput): string {
  const m = r.metrics;
  const s: SeriesPoint[] = m.series;
  const xMax = Math.max(s.length, 1);
  const at = (p: SeriesPoint) => p.t + 0.5;
  const rate = lineChart('rate', [
    { name: 'achieved req/s', color: '#2563eb', points: s.map((p) => [at(p), p.achieved_rps]) },
    { name: 'target req/s', color: '#111827', dash: true, points: s.map((p) => [at(p), p.target_rps]) },
  ], { xMax, xLabel: 'seconds', yLabel: 'requests / second', bars: { name: 'errors / second', color: '#dc2626', points: s.map((p) => [p.t, p.errors]) } });
  const latency = lineChart('latency', [
    { name: 'p50', color: '#16a34a', points: s.map((p) => [at(p), p.p50_ms]) },
    { name: 'p99', color: '#ea580c', points: s.map((p) => [at(p), p.p99_ms]) },
  ], { xMax, xLabel: 'seconds', yLabel: 'latency (ms)' });
  const achievedPct = m.scheduled_requests > 0 ? (100 * (m.total_requests - m.dropped_requests)) / m.scheduled_requests : 0;
  const status = r.status ?? (m.stopped ? 'stopped' : 'completed');
  const tiles = [
    tile('requests sent', num(m.total_requests - m.dropped_requests)),
    tile('achieved / target req/s', `${num(m.requests_per_second, 1)} / ${num(m.target_rps, 1)}`),
    tile('of schedule sent', `${achievedPct.toFixed(1)}%`, achievedPct < 98 ? 'warn' : ''),
    tile('error rate', `${m.error_rate.toFixed(2)}%`, m.error_rate > 0 ? 'bad' : ''),
    tile('p50', msText(m.p50_latency_ms)),
    tile('p99', msText(m.p99_latency_ms)),
    tile('p99.9', msText(m.p999_latency_ms)),
    tile('max', msText(m.max_latency_ms)),
    tile('late', num(m.late_requests), m.late_requests > 0 ? 'warn' : ''),
    tile('dropped', num(m.dropped_requests), m.dropped_requests > 0 ? 'bad' : ''),
  ].join('');
  const pctRows = m.latency_distribution.map((d) => `<tr><th>p${d.percentile}</th><td>${esc(msText(d.ms))}</td></tr>`).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>${esc(r.title)}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#111827;background:#f9fafb;margin:0}
main{max-width:940px;margin:0 auto;padding:24px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.muted{color:#6b7280}.status{display:inline-block;padding:1px 8px;border-radius:10px;background:#e5e7eb;font-size:12px;margin-left:6px}
.status.completed{background:#dcfce7}.status.failed{background:#fee2e2}.status.stopped{background:#fef3c7}
.tiles{display:grid;grid-template-columns:repeat(5,1fr);gap:8px;margin-top:16px}
.tile{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px}.tile .v{font-size:18px;font-weight:600}.tile .l{color:#6b7280;font-size:12px}
.tile.warn{border-color:#f59e0b}.tile.bad{border-color:#dc2626}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px}
svg.chart{width:100%;height:auto;display:block}
.grid{stroke:#e5e7eb;stroke-width:1}.tick{font-size:11px;fill:#4b5563}.axis{font-size:12px;fill:#374151}
.line{fill:none;stroke-width:2;stroke-linejoin:round}
.legend{display:flex;gap:16px;font-size:12px;color:#374151;margin-top:4px}.key svg{vertical-align:middle;margin-right:4px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #f3f4f6;vertical-align:top}th{font-weight:500;color:#374151;width:30%}
code{font-size:12px;word-break:break-all}.cols{display:grid;grid-template-columns:1fr 1fr;gap:12px}
</style></head>
<body><main>
<h1>${esc(r.title)}<span class="status ${esc(status)}">${esc(status)}</span></h1>
<div class="muted">${esc(m.start_time)} → ${esc(m.end_time)} · ${esc(num(m.duration_seconds, 1))} s${m.app_hostnames.length ? ` · ${esc(m.app_hostnames.join(', '))}` : ''}${r.status_reason ? ` · ${esc(r.status_reason)}` : ''}</div>
<div class="tiles">${tiles}</div>
<h2>Target vs achieved rate</h2><div class="card">${rate}</div>
<h2>Latency over time <span class="muted">(from each request's intended start, by the second it completed)</span></h2><div class="card">${latency}</div>
<h2>Latency distribution</h2><div class="card">${distributionChart(m)}</div>
<h2>Status codes and errors</h2><div class="card">${statusChart(m)}</div>
<div class="cols"><div><h2>Percentiles</h2><div class="card"><table>${pctRows}</table></div></div>
<div><h2>Config</h2><div class="card"><table>${configRows(r.config)}</table></div></div></div>
<p class="muted">Open model: every request has an intended start time from the pattern; latency runs from that time, so time spent waiting for a connection or a stalled server counts. ${m.send_delay_p50_ms !== undefined && m.send_delay_p50_ms !== null ? `Send delay (intended start → sent, the generator's own timing, part of every latency above): p50 ${esc(msText(m.send_delay_p50_ms))}, p99 ${esc(msText(m.send_delay_p99_ms))}, max ${esc(msText(m.send_delay_max_ms))}. ` : ''}Late = sent more than ${esc(m.late_threshold_ms)} ms after its intended start; dropped = never sent (no connection within the timeout). Connections: at most ${esc(m.connections_max)}. Generated by berth.</p>
</main></body></html>
`;
}
