/**
 * The workload report in a real browser (Debian's chromium driven by playwright-core): a real run
 * (a ramp against a server with varied latency and some 503s) rendered to HTML, opened from a file
 * with the network closed; every chart must be drawn, nothing fetched, and a screenshot is kept in
 * test-artifacts/ (gitignored) for people to look at. Skips with a reason when chromium is missing,
 * fails instead under BERTH_REQUIRE_BROWSER=1 (CI installs it).
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runWorkload } from '../../bench/workload/engine.js';
import { renderReport } from '../../bench/workload/report.js';
import { repoRoot } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';

const CHROMIUM = '/usr/bin/chromium';
const have = existsSync(CHROMIUM);
if (!have) {
  if (process.env.BERTH_REQUIRE_BROWSER === '1') throw new Error(`${CHROMIUM} is missing and BERTH_REQUIRE_BROWSER=1 (apt-get install -y chromium)`);
  process.stdout.write(`[skip] workload report browser test: ${CHROMIUM} not installed (apt-get install -y chromium)\n`);
}

let server: Server;
let browser: BrowserContext;
let tmp: { dir: string; cleanup(): Promise<void> };

beforeAll(async () => {
  if (!have) return;
  tmp = await tempDir('berth-report-');
  let n = 0;
  server = createServer((_req, res) => {
    n++;
    // mostly fast, a slow tail, and a few 503s: every chart has something to show
    const delay = n % 50 === 0 ? 40 : n % 7 === 0 ? 8 : 0;
    setTimeout(() => { res.statusCode = n % 97 === 0 ? 503 : 200; res.end('ok'); }, delay);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  // a fresh profile per run (playwright passes it as --user-data-dir)
  browser = await chromium.launchPersistentContext(join(tmp.dir, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1000, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

afterAll(async () => {
  await browser?.close();
  server?.closeAllConnections();
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  await tmp?.cleanup();
});

describe.skipIf(!have)('workload report in chromium', () => {
  it('draws every chart from a real run, fetches nothing, and is saved as a screenshot', async () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const config = { url, pattern: 'ramp', rps: 100, ramp_to_rps: 400, duration_seconds: 4 } as const;
    const metrics = await runWorkload({ ...config }).done;
    expect(metrics.status_code_distribution['503']).toBeGreaterThan(0);
    const file = join(tmp.dir, 'report.html');
    await writeFile(file, renderReport({ title: 'berth load: report browser test', config: { ...config }, metrics }));

    const page = await browser.newPage();
    const requests: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto(pathToFileURL(file).href);

    const charts = await page.$$eval('svg[data-chart]', (svgs) => svgs.map((s) => {
      const box = s.getBoundingClientRect();
      const lines = [...s.querySelectorAll('path.line')].map((p) => (p as SVGPathElement).getTotalLength());
      return { id: s.getAttribute('data-chart'), width: box.width, height: box.height, lines, points: s.querySelectorAll('circle').length, bars: s.querySelectorAll('rect.bar').length };
    }));
    const byId = Object.fromEntries(charts.map((c) => [c.id, c]));
    expect(Object.keys(byId).sort()).toEqual(['latency', 'latency-distribution', 'rate', 'status-codes']);
    for (const c of charts) {
      expect(c.width, c.id!).toBeGreaterThan(500);
      expect(c.height, c.id!).toBeGreaterThan(50);
    }
    // target and achieved rate: two lines across the chart, errors as bars
    expect(byId.rate.lines).toHaveLength(2);
    for (const len of byId.rate.lines) expect(len).toBeGreaterThan(300);
    expect(byId.rate.bars).toBeGreaterThan(0);
    // p50 and p99 over time
    expect(byId.latency.lines).toHaveLength(2);
    for (const len of byId.latency.lines) expect(len).toBeGreaterThan(300);
    // the percentile spectrum
    expect(byId['latency-distribution'].lines[0]).toBeGreaterThan(300);
    expect(byId['latency-distribution'].points).toBeGreaterThanOrEqual(10);
    // 200 and 503
    expect(byId['status-codes'].bars).toBe(2);
    // the summary shows the numbers of this run
    const tiles = await page.$$eval('.tile', (ts) => ts.map((t) => t.textContent ?? ''));
    expect(tiles.join(' ')).toContain('p99');
    expect(await page.textContent('h1')).toContain('report browser test');

    expect(errors).toEqual([]);
    expect(requests.filter((u) => !u.startsWith('file:'))).toEqual([]);

    const dir = join(repoRoot, 'test-artifacts');
    await mkdir(dir, { recursive: true });
    await page.screenshot({ path: join(dir, 'workload-report.png'), fullPage: true });
    await writeFile(join(dir, 'workload-report.html'), await page.content());
    await page.close();
  });
});
