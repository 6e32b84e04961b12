/**
 * The shape of a traffic tag (`canary` in `canary---shop.example.com`), one rule for the control
 * plane (control-plane/apps/traffic.ts, which also checks the hostname the tag makes) and the CLI
 * (which refuses a bad --tag before it packs and uploads anything).
 */
const TAG = /^[a-z](?:[a-z0-9]|-(?!-))*$/;

/** Why `tag` is not a valid traffic tag, or null when it is. */
export function tagProblem(tag: string): string | null {
  if (!TAG.test(tag) || tag.endsWith('-')) return 'must be lower-case letters, digits and single hyphens, starting with a letter and not ending with a hyphen';
  if (tag.length > 63) return 'must be at most 63 characters';
  return null;
}
