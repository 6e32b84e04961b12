/**
 * The shape of a traffic tag (`canary` in `canary---shop.example.com`), one rule for the control
 * plane (control-plane/apps/traffic.ts, which also checks the hostname the tag makes) and the CLI
 * (which refuses a bad --tag before it packs and uploads anything).
 */
const TAG = /^[a-z](?:[a-z0-9]|-(?!-))*$/;

/**
 * A tag makes the DNS label `TAG---LABEL` (LABEL: the app hostname's first label), at most 63
 * characters: 59 leaves room for `---` and a one-character label. Longer hostnames' labels leave
 * less, which the control plane checks on the hostname the tag makes.
 */
export const TAG_MAX_LENGTH = 59;

/** Why `tag` is not a valid traffic tag, or null when it is. */
export function tagProblem(tag: string): string | null {
  if (!TAG.test(tag) || tag.endsWith('-')) return 'must be lower-case letters, digits and single hyphens, starting with a letter and not ending with a hyphen';
  if (tag.length > TAG_MAX_LENGTH) return `must be at most ${TAG_MAX_LENGTH} characters (it becomes part of a 63-character DNS label, TAG---LABEL)`;
  return null;
}
