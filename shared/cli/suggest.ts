import { closest, distance } from 'fastest-levenshtein';

/**
 * ` (did you mean "deploy"?)` for a mistyped command or flag: the nearest of `known` when it is at
 * most two edits away (and fewer than the word's own length: "x" suggests nothing); else ''.
 */
export function didYouMean(word: string, known: readonly string[], prefix = ''): string {
  if (word === '' || known.length === 0) return '';
  const best = closest(word, known as string[]);
  const d = distance(word, best);
  return d <= 2 && d < word.length ? ` (did you mean ${prefix}${best}?)` : '';
}
