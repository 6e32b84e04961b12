/**
 * A small ACME CA (RFC 8555) for tests, on loopback: accounts, orders, HTTP-01 authorizations
 * and certificates signed by a CA of its own (openssl), with each request's JWS verified (jose),
 * its nonce used once and its `url` checked. The HTTP-01 validation fetches
 * `/.well-known/acme-challenge/TOKEN` from `validationPort` on 127.0.0.1 with the name as Host
 * (what a CA's resolver would reach), and compares the answer with `TOKEN.thumbprint`.
 * Not a CA for anything but tests: no revocation, no key change, no rate limits.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { calculateJwkThumbprint, flattenedVerify, importJWK, type FlattenedJWSInput, type JWK } from 'jose';

interface Authz { id: string; domain: string; token: string; status: 'pending' | 'valid' | 'invalid'; account: string; error?: string }
interface Order { id: string; account: string; domains: string[]; authz: string[]; status: 'pending' | 'ready' | 'processing' | 'valid' | 'invalid'; cert?: string }

export interface TestAcme {
  directory: string;
  /** the CA's own certificate (PEM): what issued certificates chain to */
  caPem: string;
  /** names validated (each HTTP-01 fetch: the name, and whether the answer matched) */
  validations: Array<{ domain: string; ok: boolean; got: string; head: number | string }>;
  /** certificates issued, by name */
  issued: string[];
  /** days the next certificates last */
  days: number;
  close(): Promise<void>;
}

export async function startAcmeServer(validationPort: () => number | Promise<number>): Promise<TestAcme> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-acme-ca-'));
  const ssl = (...args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args[0]}: ${r.stderr}`);
    return r.stdout;
  };
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '30', '-subj', '/CN=berth test ACME CA',
    '-keyout', 'ca.key', '-out', 'ca.crt');
  const caPem = readFileSync(join(dir, 'ca.crt'), 'utf8');

  const nonces = new Set<string>();
  const accounts = new Map<string, { jwk: JWK; thumbprint: string }>();
  const authzs = new Map<string, Authz>();
  const orders = new Map<string, Order>();
  let seq = 0;
  const acme: TestAcme = { directory: '', caPem, validations: [], issued: [], days: 60, close: async () => {} };
  let base = '';

  const nonce = () => {
    const n = randomBytes(12).toString('base64url');
    nonces.add(n);
    return n;
  };
  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, { 'replay-nonce': nonce(), 'cache-control': 'no-store', 'content-type': typeof body === 'string' ? 'application/pem-certificate-chain' : 'application/json', ...headers });
    res.end(text);
  };
  const problem = (res: ServerResponse, status: number, type: string, detail: string) =>
    send(res, status, { type: `urn:ietf:params:acme:error:${type}`, detail }, { 'content-type': 'application/problem+json' });

  const authzView = (a: Authz) => ({
    status: a.status, identifier: { type: 'dns', value: a.domain },
    challenges: [{ type: 'http-01', url: `${base}/chall/${a.id}`, token: a.token, status: a.status === 'valid' ? 'valid' : a.status === 'invalid' ? 'invalid' : 'pending', ...(a.error ? { error: { detail: a.error } } : {}) }],
  });
  const orderView = (o: Order) => {
    if (o.status === 'pending' && o.authz.every((id) => authzs.get(id)!.status === 'valid')) o.status = 'ready';
    if (o.status === 'pending' && o.authz.some((id) => authzs.get(id)!.status === 'invalid')) o.status = 'invalid';
    return {
      status: o.status, identifiers: o.domains.map((d) => ({ type: 'dns', value: d })),
      authorizations: o.authz.map((id) => `${base}/authz/${id}`), finalize: `${base}/finalize/${o.id}`,
      ...(o.cert ? { certificate: `${base}/cert/${o.id}` } : {}),
    };
  };

  /** GET the answer from the validation port with the name as Host. */
  // (a HEAD first, as some clients and monitors send: the answer's status is recorded)
  const fetchAnswer = async (domain: string, token: string) => {
    const port = await validationPort();
    const head = await fetchFrom(port, domain, token, 'HEAD');
    return { head: head.status, body: await fetchFrom(port, domain, token, 'GET').then((r) => r.body) };
  };
  const fetchFrom = (port: number, domain: string, token: string, method: string) => new Promise<{ status: number | string; body: string }>((resolve) => {
    // (the GET says `Content-Length: 0`, as some clients do: no body)
    const req = request({ host: '127.0.0.1', port, method, path: `/.well-known/acme-challenge/${token}`, headers: { host: domain, ...(method === 'GET' ? { 'content-length': '0' } : {}) } }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (c: string) => (body += c));
      r.on('end', () => resolve({ status: r.statusCode!, body: r.statusCode === 200 ? body : `status ${r.statusCode}` }));
    });
    req.on('error', (e) => resolve({ status: `error ${e.message}`, body: `error ${e.message}` }));
    req.end();
  });

  async function handle(req: IncomingMessage, res: ServerResponse, raw: string): Promise<void> {
    const path = req.url ?? '/';
    if (path === '/directory') {
      return send(res, 200, { newNonce: `${base}/new-nonce`, newAccount: `${base}/new-account`, newOrder: `${base}/new-order`, revokeCert: `${base}/revoke`, keyChange: `${base}/key-change`, meta: { termsOfService: `${base}/terms` } });
    }
    if (path === '/new-nonce') {
      res.writeHead(req.method === 'HEAD' ? 200 : 204, { 'replay-nonce': nonce(), 'cache-control': 'no-store' });
      return void res.end();
    }
    if (req.method !== 'POST') return problem(res, 405, 'malformed', 'POST only');
    let jws: FlattenedJWSInput;
    let header: { alg: string; nonce: string; url: string; jwk?: JWK; kid?: string };
    try {
      jws = JSON.parse(raw) as FlattenedJWSInput;
      header = JSON.parse(Buffer.from(jws.protected!, 'base64url').toString()) as typeof header;
    } catch {
      return problem(res, 400, 'malformed', 'not a JWS');
    }
    if (!nonces.delete(header.nonce)) return problem(res, 400, 'badNonce', 'nonce unknown or used');
    if (header.url !== `${base}${path}`) return problem(res, 400, 'unauthorized', `url ${header.url} is not ${base}${path}`);
    const jwk = path === '/new-account' ? header.jwk : accounts.get(header.kid ?? '')?.jwk;
    if (!jwk) return problem(res, 400, 'accountDoesNotExist', 'no such account');
    let payloadText: string;
    try {
      payloadText = new TextDecoder().decode((await flattenedVerify(jws, await importJWK(jwk, header.alg))).payload);
    } catch (e) {
      return problem(res, 400, 'unauthorized', `signature: ${(e as Error).message}`);
    }
    const payload = payloadText === '' ? null : JSON.parse(payloadText) as Record<string, unknown>;
    const account = path === '/new-account' ? `${base}/acct/${await calculateJwkThumbprint(jwk)}` : header.kid!;

    if (path === '/new-account') {
      if (!accounts.has(account)) accounts.set(account, { jwk, thumbprint: await calculateJwkThumbprint(jwk) });
      return send(res, 201, { status: 'valid', contact: (payload?.contact as string[]) ?? [] }, { location: account });
    }
    if (path === '/new-order') {
      const domains = ((payload?.identifiers as Array<{ value: string }>) ?? []).map((i) => i.value);
      const o: Order = { id: String(++seq), account, domains, authz: [], status: 'pending' };
      for (const d of domains) {
        const a: Authz = { id: String(++seq), domain: d, token: randomBytes(16).toString('base64url'), status: 'pending', account };
        authzs.set(a.id, a);
        o.authz.push(a.id);
      }
      orders.set(o.id, o);
      return send(res, 201, orderView(o), { location: `${base}/order/${o.id}` });
    }
    const [, kind, id] = path.split('/');
    if (kind === 'authz' && authzs.get(id)?.account === account) return send(res, 200, authzView(authzs.get(id)!));
    if (kind === 'chall' && authzs.get(id)?.account === account) {
      const a = authzs.get(id)!;
      if (a.status === 'pending' && payload !== null) {
        const want = `${a.token}.${accounts.get(account)!.thumbprint}`;
        const { head, body: got } = await fetchAnswer(a.domain, a.token);
        acme.validations.push({ domain: a.domain, ok: got === want, got, head });
        a.status = got === want ? 'valid' : 'invalid';
        if (a.status === 'invalid') a.error = `the answer at /.well-known/acme-challenge/${a.token} was "${got.slice(0, 100)}"`;
      }
      return send(res, 200, authzView(a).challenges[0], { link: `<${base}/authz/${a.id}>;rel="up"` });
    }
    if (kind === 'order' && orders.get(id)?.account === account) return send(res, 200, orderView(orders.get(id)!));
    if (kind === 'finalize' && orders.get(id)?.account === account) {
      const o = orders.get(id)!;
      if (orderView(o).status !== 'ready') return problem(res, 403, 'orderNotReady', `order is ${o.status}`);
      const csr = `-----BEGIN CERTIFICATE REQUEST-----\n${Buffer.from(String(payload?.csr), 'base64url').toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`;
      writeFileSync(join(dir, `${id}.csr`), csr);
      const text = ssl('req', '-in', `${id}.csr`, '-noout', '-text');
      const names = [...text.matchAll(/DNS:([^,\s]+)/g)].map((m) => m[1]).sort();
      if (JSON.stringify(names) !== JSON.stringify([...o.domains].sort())) return problem(res, 400, 'badCSR', `the CSR names ${names.join(',')}, the order ${o.domains.join(',')}`);
      writeFileSync(join(dir, `${id}.ext`), `subjectAltName=${o.domains.map((d) => `DNS:${d}`).join(',')}\n`);
      ssl('x509', '-req', '-in', `${id}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', String(acme.days), '-extfile', `${id}.ext`, '-out', `${id}.crt`);
      o.cert = readFileSync(join(dir, `${id}.crt`), 'utf8') + caPem;
      o.status = 'valid';
      acme.issued.push(...o.domains);
      return send(res, 200, orderView(o), { location: `${base}/order/${o.id}` });
    }
    if (kind === 'cert' && orders.get(id)?.account === account && orders.get(id)!.cert) return send(res, 200, orders.get(id)!.cert!);
    return problem(res, 404, 'malformed', `nothing at ${path} for this account`);
  }

  const server = createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (raw += c));
    req.on('end', () => {
      handle(req, res, raw).catch((e: Error) => problem(res, 500, 'serverInternal', e.message));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  acme.directory = `${base}/directory`;
  acme.close = () => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => {
      rmSync(dir, { recursive: true, force: true });
      resolve();
    });
  });
  return acme;
}
