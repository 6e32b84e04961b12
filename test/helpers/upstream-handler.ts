/**
 * The constant part of a test's upstream request (proxy/upstream/connection.ts UpstreamHandler):
 * not HEAD, one request per connection at a time (no pipelining), 10 s timeouts, no response head
 * left unwritten. A test's request extends it and implements the callbacks it watches.
 */
export abstract class TestUpstreamRequest {
  readonly headPending = false;
  readonly headRequest = false;
  readonly pipeline = 1;
  readonly pipelineGroup = '';
  readonly headersTimeoutMs = 10_000;
  readonly idleTimeoutMs = 10_000;
}
