import type { FastifyPluginAsync } from 'fastify';

/**
 * Mark a plugin as not encapsulated (what `fastify-plugin` does), so its decorators and hooks
 * are visible to the rest of the app. Kept local to avoid a dependency for four lines.
 */
export default function fp<T extends FastifyPluginAsync<any>>(plugin: T, name: string): T {
  const p = plugin as unknown as Record<symbol, unknown>;
  p[Symbol.for('skip-override')] = true;
  p[Symbol.for('fastify.display-name')] = name;
  return plugin;
}
