import type { RouteTable } from '../routing/table.js';
import type { AccessLog } from './access-log.js';

/** Per-thread proxy state read by the hot path. Swapping `table` is atomic. */
export const runtime: { table: RouteTable | null; accessLog: AccessLog | null; via: string } = {
  table: null,
  accessLog: null,
  via: '1.1 berth',
};
