/**
 * A token setting that may list several tokens ("new,old", or one per line), so one can be rotated
 * without a moment where a proxy is refused: the control plane accepts each, a proxy presents the
 * first. A token never contains a comma or whitespace.
 */
export function tokenList(v: string): string[] {
  return v.split(/[\s,]+/).filter((t) => t !== '');
}
