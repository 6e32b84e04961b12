import type { RouteTable } from '../routing/table.js';
import type { AccessLog } from './access-log.js';

/** Per-thread proxy state read by the hot path. Swapping `table` is atomic. */
export const runtime: {
  table: RouteTable | null;
  accessLog: AccessLog | null;
  via: string;
  /** ask the control plane for an instance of a scaled-to-zero route (null: no control plane) */
  activate: ((routeId: string) => void) | null;
  /** the plain listener answers 308 to https://host + this (`:8443`, or '' for 443) (`--https-redirect`); null = serve it */
  httpsRedirect: string | null;
  /** the proxy's own names (`--apps-path-hosts`, normalised): `/apps/{host}/` is served on them, IP addresses and localhost */
  ownNames: ReadonlySet<string>;
  /** ACME HTTP-01 answers by token while certificates are being ordered (acme/), else null: not looked at */
  acmeChallenges: Map<string, string> | null;
} = {
  table: null,
  accessLog: null,
  via: '1.1 berth',
  activate: null,
  httpsRedirect: null,
  ownNames: new Set(),
  acmeChallenges: null,
};
