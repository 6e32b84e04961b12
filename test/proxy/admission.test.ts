import { describe, expect, it } from 'vitest';
import { forwardableTarget, forwardableValue, validContentLength, validHost, validTransferEncoding } from '../../proxy/server/admission.js';
import { FAULT_CLIENT, FAULT_ENDPOINT, FAULT_NEUTRAL, FAULT_PROTOCOL, faultAfterHeaders, judgeBeforeHeaders, MAX_STALE_RESENDS, resendsStale, resendsUnsent } from '../../proxy/resilience/failure-policy.js';
import { varyCacheable, forbidsStore } from '../../proxy/server/headers.js';
import { CircuitBreaker, HALF_OPEN, PROBE_LEASE_MS } from '../../proxy/resilience/circuit-breaker.js';

describe('admission', () => {
  it.each([
    ['app.test', true], ['App.Test:8080', true], ['127.0.0.1:80', true], ['[::1]:8080', true], ['[::1]', true],
    ['a_b-c.d', true], ['', false], ['x@app.test', false], ['app.test/x', false], ['app.test#f', false],
    ['http://app.test', false], ['app.test:', false], ['app.test:123456', false], ['app.test:8x', false],
    [':80', false], ['[::1', false], ['[zz]', false], ['bücher.example', false], ['a b', false], ['app.test?', false],
    // an empty label, a port past 65535 (from an attack on a running instance: both reached the app)
    ['app.test.', true], ['app.test.:80', true], ['app.test..', false], ['app..test', false], ['.app.test', false],
    ['app.test:65535', true], ['app.test:65536', false], ['app.test:99999', false],
  ])('validHost(%j) = %s', (h, ok) => expect(validHost(h)).toBe(ok));

  it('Content-Length and Transfer-Encoding', () => {
    expect(validContentLength('0')).toBe(true);
    expect(validContentLength('12345')).toBe(true);
    for (const v of ['', '-1', '1.0', '5, 5', ' 5', '0x10', '1'.repeat(16)]) expect(validContentLength(v)).toBe(false);
    expect(validTransferEncoding('chunked')).toBe(true);
    expect(validTransferEncoding(' Chunked ')).toBe(true);
    for (const v of ['gzip, chunked', 'chunked, chunked', 'identity', '']) expect(validTransferEncoding(v)).toBe(false);
  });

  it('header values: ASCII untouched, UTF-8 back to its bytes, the unforwardable refused', () => {
    const plain = 'text/html; q=0.9';
    expect(forwardableValue(plain)).toBe(plain);
    expect(forwardableValue('café')).toBe(Buffer.from('café', 'utf8').toString('latin1'));
    expect(forwardableValue('a\tb')).toBe('a\tb');
    for (const v of ['a\x7fb', 'a\x00b', 'a\x01b', 'caf\ufffd']) expect(forwardableValue(v)).toBeNull();
    expect(forwardableTarget('/a?b=c')).toBe('/a?b=c');
    expect(forwardableTarget('/café')).toBe('/caf\xc3\xa9');
    expect(forwardableTarget('/a b')).toBeNull();
  });
});

describe('failure policy', () => {
  it.each([
    [{ code: 'ECONNREFUSED', message: '' }, FAULT_ENDPOINT, true, 502],
    [{ code: 'UND_ERR_CONNECT_TIMEOUT', message: '' }, FAULT_ENDPOINT, true, 504],
    [{ code: 'UND_ERR_HEADERS_TIMEOUT', message: '' }, FAULT_ENDPOINT, false, 504],
    [{ code: 'UND_ERR_SOCKET', message: 'other side closed' }, FAULT_ENDPOINT, true, 502],
    [{ code: 'UND_ERR_INVALID_ARG', message: 'invalid content-length header' }, FAULT_CLIENT, false, 400],
    [{ code: 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH', message: '' }, FAULT_CLIENT, false, 400],
    [{ code: 'UND_ERR_SOCKET', message: 'bad response' }, FAULT_PROTOCOL, false, 502],
    [{ code: 'UND_ERR_SOCKET', message: 'bad upgrade' }, FAULT_PROTOCOL, false, 502],
    [{ name: 'HTTPParserError', message: 'Missing expected CR' }, FAULT_ENDPOINT, false, 502],
    [{ code: 'UND_ERR_ABORTED', message: '' }, FAULT_NEUTRAL, false, 502],
  ])('%j', (err, fault, retry, status) => {
    const v = judgeBeforeHeaders(err, 'GET');
    expect([v.fault, v.retry, v.status]).toEqual([fault, retry, status]);
  });
  it('a stale keep-alive connection sends again only a safe request without a body, a bounded number of times', () => {
    for (const m of ['GET', 'HEAD', 'OPTIONS']) expect(resendsStale(m, false, 0)).toBe(true);
    for (const m of ['POST', 'PUT', 'DELETE', 'PATCH', 'TRACE']) expect(resendsStale(m, false, 0)).toBe(false);
    expect(resendsStale('GET', true, 0)).toBe(false);
    expect(resendsStale('GET', false, MAX_STALE_RESENDS - 1)).toBe(true);
    expect(resendsStale('GET', false, MAX_STALE_RESENDS)).toBe(false);
    // judged as any close when it is not sent again: idempotent methods may be retried by policy
    const v = judgeBeforeHeaders({ code: 'UPSTREAM_STALE_CONNECTION', message: '' }, 'POST');
    expect([v.fault, v.retry, v.status]).toEqual([FAULT_ENDPOINT, false, 502]);
  });
  it('a request whose connection closed before it went out is sent again whatever its method, a bounded number of times', () => {
    expect(resendsUnsent(0)).toBe(true);
    expect(resendsUnsent(MAX_STALE_RESENDS - 1)).toBe(true);
    expect(resendsUnsent(MAX_STALE_RESENDS)).toBe(false);
    // past that, the endpoint's fault, and another endpoint may be tried (nothing reached this one)
    const v = judgeBeforeHeaders({ code: 'UPSTREAM_NOT_SENT', message: '' }, 'POST');
    expect([v.fault, v.retry, v.status]).toEqual([FAULT_ENDPOINT, true, 502]);
  });
  it('a reset is retried only for idempotent methods; after headers only body failures count', () => {
    expect(judgeBeforeHeaders({ code: 'ECONNRESET', message: '' }, 'POST').retry).toBe(false);
    expect(faultAfterHeaders({ code: 'UND_ERR_BODY_TIMEOUT', message: '' })).toBe(FAULT_ENDPOINT);
    expect(faultAfterHeaders({ code: 'UND_ERR_ABORTED', message: '' })).toBe(FAULT_NEUTRAL);
  });
});

describe('fallback rules and the probe lease', () => {
  it('Vary and Cache-Control', () => {
    expect(varyCacheable('Accept-Encoding')).toBe(2);
    expect(varyCacheable('accept-encoding, Accept-Encoding')).toBe(2);
    expect(varyCacheable('')).toBe(1);
    for (const v of ['Cookie', '*', 'Accept-Encoding, Authorization', 'User-Agent']) expect(varyCacheable(v)).toBe(0);
    for (const v of ['no-cache', 'private, max-age=0', 'No-Store']) expect(forbidsStore(v)).toBe(true);
    expect(forbidsStore('public, max-age=60')).toBe(false);
  });
  it('a lost probe frees the HALF_OPEN slot after the lease', () => {
    const b = new CircuitBreaker(1, 100);
    b.onFailure(0);
    expect(b.admits(50)).toBe(false);
    b.acquire(200);
    expect(b.state).toBe(HALF_OPEN);
    expect(b.admits(300)).toBe(false);
    expect(b.admits(200 + PROBE_LEASE_MS)).toBe(true);
    b.onNeutral();
    expect(b.admits(301)).toBe(true);
  });
});
