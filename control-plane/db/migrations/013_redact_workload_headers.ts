/**
 * Workload configs were stored with their request headers as sent, credentials for the tenant's
 * app included. From now on sensitive values are never stored (workloads/repo.ts publicConfig);
 * this replaces them in the rows stored before by "[redacted]", with the rule of
 * bench/workload/redact.ts (a name containing auth, token, secret, key, cookie, passw, session or
 * credential, in any case). The runs are over: nothing reads those values again.
 */
export const sql = `
UPDATE workloads w
   SET config = jsonb_set(w.config, '{headers}', (
     SELECT jsonb_object_agg(h.key, CASE WHEN h.key ~* '(auth|token|secret|key|cookie|passw|session|credential)' THEN to_jsonb('[redacted]'::text) ELSE h.value END)
       FROM jsonb_each(w.config->'headers') AS h))
 WHERE jsonb_typeof(w.config->'headers') = 'object' AND w.config->'headers' <> '{}'::jsonb;
`;
