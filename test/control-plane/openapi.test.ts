import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

/**
 * The API documents itself: every route registered under /api appears in the OpenAPI document at
 * /docs/json with a one-line summary, and the interactive page at /docs is served from the
 * bundled assets (no network).
 */
describe('OpenAPI at /docs', () => {
  let t: TestControlPlane;
  let doc: { openapi: string; paths: Record<string, Record<string, { summary?: string; parameters?: unknown[] }>> };

  beforeAll(async () => {
    t = await startTestControlPlane();
    const r = await fetch(`${t.cp.url}/docs/json`);
    expect(r.status).toBe(200);
    doc = await r.json() as typeof doc;
  });
  afterAll(async () => { await t?.close(); });

  it('is OpenAPI 3', () => {
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths).length).toBeGreaterThan(10);
  });

  it('lists every registered /api route, each with a one-line summary', () => {
    const api = t.cp.app.apiRoutes.filter((r) => r.url.startsWith('/api/'));
    expect(api.length).toBeGreaterThan(15);
    const missing: string[] = [];
    const unsummarised: string[] = [];
    for (const r of api) {
      const path = r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
      const op = doc.paths[path]?.[r.method.toLowerCase()];
      if (!op) { missing.push(`${r.method} ${r.url}`); continue; }
      if (!op.summary || op.summary.includes('\n') || op.summary.length > 120) unsummarised.push(`${r.method} ${r.url}`);
    }
    expect(missing, 'routes missing from the OpenAPI document').toEqual([]);
    expect(unsummarised, 'routes without a one-line summary (schema.summary)').toEqual([]);
  });

  it('documents path parameters and query strings from the validating schemas', () => {
    const logs = doc.paths['/api/containers/{id}/logs']?.get;
    expect(logs?.parameters?.length).toBeGreaterThanOrEqual(4);
    const names = (logs!.parameters as { name: string }[]).map((p) => p.name);
    expect(names).toEqual(expect.arrayContaining(['id', 'tail', 'since', 'follow']));
  });

  it('documents the multipart upload from the field schema that validates it', () => {
    const body = (doc.paths['/api/images'].post as { requestBody?: { content: Record<string, { schema: { properties: Record<string, unknown>; required: string[] } }> } }).requestBody;
    const schema = body?.content['multipart/form-data'].schema;
    expect(schema?.required).toEqual(expect.arrayContaining(['name', 'app_hostname', 'file']));
    expect(Object.keys(schema?.properties ?? {})).toEqual(expect.arrayContaining(['min_instances', 'container_concurrency', 'no_traffic', 'traffic_tag', 'file']));
  });

  it('serves the interactive page and its assets without any network', async () => {
    const page = await fetch(`${t.cp.url}/docs/static/index.html`);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('swagger-ui');
    expect(html).not.toMatch(/https?:\/\/(?!127\.0\.0\.1|localhost)[a-z]/i);
    const bundle = await fetch(`${t.cp.url}/docs/static/swagger-ui-bundle.js`);
    expect(bundle.status).toBe(200);
    expect((await bundle.arrayBuffer()).byteLength).toBeGreaterThan(100_000);
    const init = await (await fetch(`${t.cp.url}/docs/static/swagger-initializer.js`)).text();
    expect(init).toContain('validatorUrl: null');
    const root = await fetch(`${t.cp.url}/docs`, { redirect: 'manual' });
    expect([200, 302]).toContain(root.status);
  });
});
