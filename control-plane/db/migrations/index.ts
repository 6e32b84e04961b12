/**
 * The ordered list of schema migrations. To add one: create `NNN_name.ts` exporting `sql`,
 * import it here and append it. Never edit or reorder a migration that has shipped.
 * (They are TypeScript modules rather than .sql files so that `tsc` ships them in dist/.)
 */
import { sql as m001 } from './001_init.js';
import { sql as m002 } from './002_containers.js';
import { sql as m003 } from './003_events_txid.js';
import { sql as m004 } from './004_min_instances_provisioned.js';
import { sql as m005 } from './005_revoked_sessions.js';
import { sql as m006 } from './006_scaling_settings.js';
import { sql as m007 } from './007_revisions.js';
import { sql as m008 } from './008_workloads.js';
import { sql as m009 } from './009_metering.js';
import { sql as m010 } from './010_pending_deploys.js';
import { sql as m011 } from './011_usage_by_user_id.js';
import { sql as m012 } from './012_workload_runner.js';
import { sql as m013 } from './013_redact_workload_headers.js';
import { sql as m014 } from './014_app_deleting.js';
import { sql as m015 } from './015_app_env.js';
import { sql as m016 } from './016_request_timeout.js';
import { sql as m017 } from './017_build_runner.js';
import { sql as m018 } from './018_session_affinity.js';
import { sql as m019 } from './019_revision_last_active.js';
import { sql as m020 } from './020_private_apps.js';
import { sql as m021 } from './021_upstream_pipeline.js';
import { sql as m022 } from './022_hostname_holds.js';
import { sql as m023 } from './023_hostname_holds_by_user.js';
import { sql as m024 } from './024_invoices.js';
import { sql as m025 } from './025_events_by_app.js';
import { sql as m026 } from './026_login_limits.js';
import { sql as m027 } from './027_events_notify.js';
import { sql as m028 } from './028_token_parents.js';
import { sql as m029 } from './029_routes_notify.js';
import { sql as m030 } from './030_revision_start_failure.js';
import { sql as m031 } from './031_start_proof.js';
import { sql as m032 } from './032_start_blocked.js';
import { sql as m033 } from './033_joins_traffic.js';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const migrations: Migration[] = [
  { version: 1, name: '001_init', sql: m001 },
  { version: 2, name: '002_containers', sql: m002 },
  { version: 3, name: '003_events_txid', sql: m003 },
  { version: 4, name: '004_min_instances_provisioned', sql: m004 },
  { version: 5, name: '005_revoked_sessions', sql: m005 },
  { version: 6, name: '006_scaling_settings', sql: m006 },
  { version: 7, name: '007_revisions', sql: m007 },
  { version: 8, name: '008_workloads', sql: m008 },
  { version: 9, name: '009_metering', sql: m009 },
  { version: 10, name: '010_pending_deploys', sql: m010 },
  { version: 11, name: '011_usage_by_user_id', sql: m011 },
  { version: 12, name: '012_workload_runner', sql: m012 },
  { version: 13, name: '013_redact_workload_headers', sql: m013 },
  { version: 14, name: '014_app_deleting', sql: m014 },
  { version: 15, name: '015_app_env', sql: m015 },
  { version: 16, name: '016_request_timeout', sql: m016 },
  { version: 17, name: '017_build_runner', sql: m017 },
  { version: 18, name: '018_session_affinity', sql: m018 },
  { version: 19, name: '019_revision_last_active', sql: m019 },
  { version: 20, name: '020_private_apps', sql: m020 },
  { version: 21, name: '021_upstream_pipeline', sql: m021 },
  { version: 22, name: '022_hostname_holds', sql: m022 },
  { version: 23, name: '023_hostname_holds_by_user', sql: m023 },
  { version: 24, name: '024_invoices', sql: m024 },
  { version: 25, name: '025_events_by_app', sql: m025 },
  { version: 26, name: '026_login_limits', sql: m026 },
  { version: 27, name: '027_events_notify', sql: m027 },
  { version: 28, name: '028_token_parents', sql: m028 },
  { version: 29, name: '029_routes_notify', sql: m029 },
  { version: 30, name: '030_revision_start_failure', sql: m030 },
  { version: 31, name: '031_start_proof', sql: m031 },
  { version: 32, name: '032_start_blocked', sql: m032 },
  { version: 33, name: '033_joins_traffic', sql: m033 },
];
