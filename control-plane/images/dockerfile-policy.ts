import { ApiError } from '../http/errors.js';
import { DEFAULT_REGISTRIES, registryAllowed, registryOf } from './registries.js';

/**
 * What a tenant's Dockerfile may do (DESIGN.md "Security model": builds may not fetch URLs through
 * the daemon nor name another user's images). The Docker daemon runs every build with the host's
 * privileges: `ADD <url>` is fetched from the host's network namespace (so it reaches services on
 * 127.0.0.1), and `FROM` / `COPY --from` / `RUN --mount=from=` resolve against every image on the
 * daemon, including other tenants' `berth-u{user}-i{image}:{tag}` images.
 *
 * This module parses a Dockerfile the way the builders do (parser directives, `# escape=`, line
 * continuations, comments, heredocs, flags, JSON-array form, `ARG`/`ENV` substitution) and
 * refuses, naming the line:
 * - `ADD` of a URL or a git repository (also behind a variable or quotes);
 * - image references to another user's berth image, bare image ids (`sha256:…` or a hex prefix
 *   the daemon would resolve as an id), and references that cannot be resolved statically
 *   (build args are not user-settable, so an `ARG` without default is unset);
 * - images on a registry the platform does not pull from (registries.ts: the daemon would fetch
 *   them from the host's network);
 * - `RUN --network=host` / `--security=insecure`, and `# syntax=` frontends other than
 *   docker/dockerfile;
 * - `ONBUILD ONBUILD|FROM|MAINTAINER` (the builders refuse them too);
 * - text the builders would read differently from this module: Unicode or control whitespace
 *   (NEL, NBSP, form feed, a lone CR…), a directive after `# check=`.
 * Earlier stage names and stage indexes are fine, and so are the user's own berth images.
 * Where Docker versions differ, this follows moby/buildkit's parser (Docker 20.10 and newer) and
 * refuses what one version would read otherwise.
 *
 * Heredocs are a BuildKit feature; the classic builder reads their bodies as instructions. The
 * policy checks both readings, so a body line only a classic builder would execute is refused
 * as well.
 */

export class DockerfilePolicyError extends Error {
  constructor(readonly line: number, readonly reason: string) {
    super(`Dockerfile line ${line}: ${reason}`);
  }
}

export interface PolicyResult {
  /** Image references (resolved, not stages, not scratch) the build will read. */
  images: string[];
  /**
   * The sources of ADD instructions, variables expanded (never a URL: those are refused): the
   * builder unpacks a local archive named by one itself, which build-check.ts refuses.
   */
  addSources: string[];
}

/** berth's image naming: `berth-u{user}-i{image}`. */
const BERTH_REPO = /^berth-u(\d+)(?:-|$)/i;

/** The largest Dockerfile an upload may have (real ones are a few KiB; this one is read on the API's event loop). */
export const MAX_DOCKERFILE_BYTES = 256 * 1024;

const KNOWN_DIRECTIVES = new Set(['syntax', 'escape', 'check']);

/**
 * Whitespace the builders (Go: unicode.IsSpace, bufio lines) and this check (JavaScript: \s,
 * split on \n) do not agree on: NEL is a space to Go and not to JavaScript, NBSP and the Unicode
 * spaces are spaces to both in some places and not others, form feed and vertical tab end a
 * directive for one and not the other, and a lone CR is a line end to neither but trimmed by some.
 * A Dockerfile with any of them is refused: otherwise a line the builder runs could be one this
 * check never reads as an instruction (`\u0085ADD http://…`).
 */
const AMBIGUOUS_SPACE = /[\v\f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]|\r(?!\n)/;
const ALLOWED_FRONTEND = /^(?:(?:docker\.io\/)?docker\/dockerfile(?:-upstream)?)(?::[\w.-]+)?(?:@sha256:[a-f0-9]{64})?$/i;

interface Line {
  /** 1-based number of the line the instruction starts on */
  no: number;
  text: string;
}

interface Instruction {
  no: number;
  cmd: string;
  /** everything after the instruction word (continuations joined) */
  rest: string;
}

// ---------------------------------------------------------------------------------------------
// Lexing

/** Spaces and tabs off both ends (linear, unlike an anchored regex on a long run of blanks). */
function trimBlanks(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s[a] === ' ' || s[a] === '\t')) a++;
  while (b > a && (s[b - 1] === ' ' || s[b - 1] === '\t')) b--;
  return s.slice(a, b);
}

/**
 * The parser directives at the top, read as the builders read them: each line left-trimmed first
 * (` # escape=\`` is a directive to them), then `#`, the name, `=`, a value. A directive the
 * builders of different Docker versions read differently is refused: `# check=` is one to newer
 * ones, but ends the directives for older ones (Docker 20.10), so an `escape` after it would
 * switch the escape character for one builder and not the other.
 */
function parseDirectives(lines: string[]): { escape: string; directives: Map<string, { value: string; no: number }> } {
  const directives = new Map<string, { value: string; no: number }>();
  let i = 0;
  for (; i < lines.length; i++) {
    // `(.*)` and a hand trim, not `(.+?)[ \t]*$`: that backtracks quadratically on a long run of
    // blanks (a 1 MiB first line held the event loop for minutes)
    const m = /^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=(.*)$/.exec(lines[i].trimStart()); // (the other blanks JavaScript trims are refused: AMBIGUOUS_SPACE)
    if (!m) break;
    const value = trimBlanks(m[2]);
    if (value === '') break;
    const key = m[1].toLowerCase();
    if (!KNOWN_DIRECTIVES.has(key)) break;
    if (directives.has(key)) throw new DockerfilePolicyError(i + 1, `parser directive "${key}" given twice`);
    if (key !== 'check' && directives.has('check')) {
      throw new DockerfilePolicyError(i + 1, `parser directive "${key}" after "# check=": older builders stop reading directives at "check"; put it first`);
    }
    directives.set(key, { value, no: i + 1 });
  }
  const esc = directives.get('escape');
  if (esc && esc.value !== '\\' && esc.value !== '`') throw new DockerfilePolicyError(esc.no, `invalid escape directive "${esc.value}" (only \\ or \`)`);
  return { escape: esc?.value ?? '\\', directives };
}

const HEREDOC = /<<(-?)(?:"([^"\s]+)"|'([^'\s]+)'|([A-Za-z0-9_][A-Za-z0-9_.-]*))/g;
const HEREDOC_CMDS = new Set(['RUN', 'COPY', 'ADD']);

/**
 * Physical lines → instructions. `heredocs`: treat `<<WORD` in RUN/COPY/ADD as BuildKit does
 * (the body is data, not instructions); false: read them as the classic builder does.
 */
function instructions(lines: string[], escape: string, heredocs: boolean): Instruction[] {
  const out: Instruction[] = [];
  // the builders' rule (moby/buildkit parser.go setEscapeToken): the escape character last on the
  // line, after blanks, continues it — unless an escape character comes right before it (`\\`)
  const e = escape === '\\' ? '\\\\' : '`';
  const continued = new RegExp(`(^|[^${e}])${e}[ \\t]*$`);
  let i = 0;
  while (i < lines.length) {
    const first = lines[i];
    if (/^\s*$/.test(first) || /^\s*#/.test(first)) { i++; continue; }
    const no = i + 1;
    let text = '';
    let line = first;
    for (;;) {
      if (continued.test(line)) {
        text += line.replace(continued, '$1');
        i++;
        // comment lines inside a continuation are dropped; empty ones are skipped
        while (i < lines.length && (/^\s*#/.test(lines[i]) || /^\s*$/.test(lines[i]))) i++;
        if (i >= lines.length) break;
        line = lines[i];
        continue;
      }
      text += line;
      i++;
      break;
    }
    const m = /^\s*(\S+)\s*([\s\S]*)$/.exec(text);
    if (!m) continue;
    const cmd = m[1].toUpperCase();
    out.push({ no, cmd, rest: m[2] });
    const heredocCmd = cmd === 'ONBUILD' ? (/^\s*(\S+)/.exec(m[2])?.[1] ?? '').toUpperCase() : cmd;
    if (heredocs && HEREDOC_CMDS.has(heredocCmd)) {
      for (const h of m[2].matchAll(HEREDOC)) {
        const word = h[2] ?? h[3] ?? h[4];
        const strip = h[1] === '-';
        while (i < lines.length) {
          const body = strip ? lines[i].replace(/^\t+/, '') : lines[i];
          i++;
          if (body === word) break;
        }
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Words and variable substitution (the subset of Docker's ShellLex that matters here)

class Unresolved extends Error {
  constructor(readonly variable: string) { super(`$${variable} cannot be resolved`); }
}

/** A variable's value, `null` for "known to be unset", or `undefined` for "not knowable here". */
type Lookup = (name: string) => string | null | undefined;

/** Split on unquoted whitespace, keeping each word's raw text (quotes and escapes intact). */
function splitWords(s: string, escape: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: string | null = null;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quote) {
      cur += c;
      if (c === escape && quote === '"' && i + 1 < s.length) { cur += s[++i]; continue; }
      if (c === quote) quote = null;
      continue;
    }
    if (/\s/.test(c)) {
      if (inWord) { words.push(cur); cur = ''; inWord = false; }
      continue;
    }
    inWord = true;
    cur += c;
    if (c === escape && i + 1 < s.length) { cur += s[++i]; continue; }
    if (c === '"' || c === "'") quote = c;
  }
  if (inWord) words.push(cur);
  return words;
}

/**
 * `${A:-${B:-…}}` deeper than this is not resolved (as an unset variable): each level rescans the
 * rest of the word, and a 1 MiB line of them would take seconds, then overflow the stack.
 */
const MAX_SUBSTITUTION_DEPTH = 16;
/** A variable name where `$` left off (sticky: no copy of the rest of the word per `$`) */
const VAR_NAME = /[A-Za-z_][A-Za-z0-9_]*/y;

/** Remove quotes and escapes and substitute variables; throws Unresolved. */
function expand(word: string, lookup: Lookup, escape: string, depth = 0): string {
  if (depth > MAX_SUBSTITUTION_DEPTH) throw new Unresolved(`{…} (substitutions nested deeper than ${MAX_SUBSTITUTION_DEPTH})`);
  let out = '';
  let i = 0;
  const readVar = (): string => {
    // at s[i] === '$'
    i++;
    if (word[i] === '{') {
      const close = findClose(word, i);
      const body = word.slice(i + 1, close);
      i = close + 1;
      const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([\s\S]*))?$/.exec(body);
      if (!m) throw new Unresolved(body);
      const name = m[1];
      const v = lookup(name);
      if (!m[2]) { if (v === null || v === undefined) throw new Unresolved(name); return v; }
      if (v === undefined) throw new Unresolved(name); // could come from the base image's environment
      const colon = m[2].startsWith(':');
      const set = colon ? v !== null && v !== '' : v !== null;
      const alt = () => expand(m[3], lookup, escape, depth + 1);
      if (m[2].endsWith('-')) return set ? v! : alt();
      return set ? alt() : '';
    }
    VAR_NAME.lastIndex = i;
    const m = VAR_NAME.exec(word);
    if (!m) return '$';
    i += m[0].length;
    const v = lookup(m[0]);
    if (v === null || v === undefined) throw new Unresolved(m[0]);
    return v;
  };
  while (i < word.length) {
    const c = word[i];
    if (c === escape) {
      if (i + 1 < word.length) out += word[i + 1];
      i += 2;
    } else if (c === "'") {
      const end = word.indexOf("'", i + 1);
      out += word.slice(i + 1, end < 0 ? word.length : end);
      i = end < 0 ? word.length : end + 1;
    } else if (c === '"') {
      i++;
      while (i < word.length && word[i] !== '"') {
        if (word[i] === escape && i + 1 < word.length) { out += word[i + 1]; i += 2; }
        else if (word[i] === '$') out += readVar();
        else out += word[i++];
      }
      i++;
    } else if (c === '$') {
      out += readVar();
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

function findClose(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    if (s[i] === '{') depth++;
    else if (s[i] === '}' && --depth === 0) return i;
  }
  throw new Unresolved(s.slice(open + 1));
}

/** `--name=value` / `--name` flags at the start of an instruction's words. */
function takeFlags(words: string[]): { flags: { name: string; raw: string }[]; args: string[] } {
  const flags: { name: string; raw: string }[] = [];
  let k = 0;
  for (; k < words.length; k++) {
    const w = words[k];
    if (!w.startsWith('--')) break;
    if (w === '--') { k++; break; }
    const eq = w.indexOf('=');
    flags.push({ name: (eq < 0 ? w.slice(2) : w.slice(2, eq)).toLowerCase(), raw: eq < 0 ? '' : w.slice(eq + 1) });
  }
  return { flags, args: words.slice(k) };
}

/** The JSON-array form (`["a", "b"]`), or undefined when the text is not one. */
function jsonArray(rest: string): string[] | undefined {
  const t = rest.trim();
  if (!t.startsWith('[')) return undefined;
  try {
    const v = JSON.parse(t) as unknown;
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined;
  } catch {
    return undefined;
  }
}

/** Split a `--mount` value (CSV: key=value pairs, fields may be quoted). */
function csvFields(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let q = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '"') { if (q && s[i + 1] === '"') { cur += '"'; i++; } else q = !q; continue; }
    if (c === ',' && !q) { out.push(cur); cur = ''; continue; }
    cur += c;
  }
  out.push(cur);
  return out.map((f) => f.trim());
}

// ---------------------------------------------------------------------------------------------
// Image references

export type ImageRefVerdict =
  | { ok: true; kind: 'scratch' | 'image' | 'own' }
  | { ok: false; reason: string };

/**
 * Whether `ref` (an image reference as FROM / --from would name it) may be used by `userId`.
 * Refuses another user's berth repository under any spelling (docker.io/library/…, tags,
 * digests, upper case) and references the daemon would resolve as image ids.
 */
export function checkImageRef(ref: string, userId: number): ImageRefVerdict {
  const r = ref.trim();
  if (!r) return { ok: false, reason: 'the image reference is empty' };
  if (r.toLowerCase() === 'scratch') return { ok: true, kind: 'scratch' };
  const at = r.indexOf('@');
  const namePart = at < 0 ? r : r.slice(0, at);
  if (/^sha256:/i.test(r) || /^[a-f0-9]{64}$/i.test(namePart) || (at >= 0 && namePart === '')) {
    return { ok: false, reason: `"${r}" is an image id; image ids cannot be attributed to an owner, name the image instead` };
  }
  const slash = namePart.lastIndexOf('/');
  const colon = namePart.lastIndexOf(':');
  const hasTag = colon > slash;
  const name = hasTag ? namePart.slice(0, colon) : namePart;
  const parts = name.toLowerCase().split('/');
  if (parts.length > 1 && /^(?:docker\.io|index\.docker\.io|registry-1\.docker\.io)$/.test(parts[0])) parts.shift();
  if (parts.length > 1 && parts[0] === 'library') parts.shift();
  for (const p of parts) {
    const m = BERTH_REPO.exec(p);
    if (m && Number(m[1]) !== userId) return { ok: false, reason: `"${r}" is another user's image` };
  }
  // The daemon looks a name it does not know up as an image-id prefix: `FROM 4e5f` may name any image.
  if (parts.length === 1 && !hasTag && at < 0 && /^[a-f0-9]+$/.test(parts[0])) {
    return { ok: false, reason: `"${r}" looks like an image id, which the daemon would resolve to any image; give a repository name (and tag)` };
  }
  return { ok: true, kind: parts.some((p) => BERTH_REPO.test(p)) ? 'own' : 'image' };
}

/** URLs and git repositories ADD would fetch through the daemon. */
function isRemoteSource(src: string): boolean {
  const s = src.trim().toLowerCase();
  return /^[a-z][a-z0-9+.-]*:\/\//.test(s) || s.startsWith('git@') || s.startsWith('github.com/') || /^[a-z0-9.-]+@[a-z0-9.-]+:/.test(s);
}

// ---------------------------------------------------------------------------------------------
// The policy

/** A value, `null` for "known to be unset", `undefined` for "depends on something unknown". */
type Value = string | null | undefined;

interface Stage {
  name: string | null;
  /** ENV values (a child stage inherits them) */
  env: Map<string, Value>;
  /** ARG values (not inherited) */
  args: Map<string, Value>;
  /** true when the base's environment is known (scratch, or an earlier stage with a known base) */
  closed: boolean;
}

class Checker {
  readonly images = new Set<string>();
  readonly addSources: string[] = [];
  private meta = new Map<string, Value>();
  private stages: Stage[] = [];
  constructor(private readonly userId: number, private readonly escape: string, private readonly registries: readonly string[]) {}

  private fail(no: number, reason: string): never {
    throw new DockerfilePolicyError(no, reason);
  }

  // FROM sees only the ARGs before the first FROM; an undeclared one is simply unset there
  private metaLookup: Lookup = (n) => (this.meta.has(n) ? this.meta.get(n) : null);

  private stageLookup(st: Stage | undefined): Lookup {
    return (n) => {
      if (!st) return undefined;
      // ENV overrides an ARG of the same name
      if (st.env.has(n)) return st.env.get(n);
      if (st.args.has(n)) return st.args.get(n);
      return st.closed ? null : undefined;
    };
  }

  private expandOr(no: number, word: string, lookup: Lookup, what: string): string {
    try {
      return expand(word, lookup, this.escape);
    } catch (e) {
      if (e instanceof Unresolved) this.fail(no, `${what} uses $${e.variable}, which cannot be resolved (build args cannot be set on berth; give ARG a default)`);
      throw e;
    }
  }

  /** An expanded `--from` / `from=` value: an earlier stage (name or index) or an allowed image. */
  private checkSource(no: number, v: string, what: string, stageAware: boolean): void {
    if (stageAware) {
      if (/^\d+$/.test(v)) return; // a stage index (the builder refuses indexes that are not earlier stages)
      if (this.stages.some((s) => s.name === v.toLowerCase())) return;
    }
    this.checkImage(no, v, what);
  }

  private checkImage(no: number, ref: string, what: string): void {
    const verdict = checkImageRef(ref, this.userId);
    if (!verdict.ok) this.fail(no, `${what}: ${verdict.reason}`);
    // (an own image too when it names a registry: `127.0.0.1:9901/berth-u5-x`; berth's own tags
    // have no registry part and are on the daemon — should one have to be pulled, build-check.ts
    // checks the registry before the pull)
    if (verdict.kind === 'image' || (verdict.kind === 'own' && ref.includes('/'))) {
      const registry = registryOf(ref);
      if (!registryAllowed(registry, this.registries)) {
        this.fail(no, `${what}: "${ref.trim()}" is on the registry "${registry}", which this platform does not pull from (it pulls from: ${this.registries.join(', ')}; BERTH_REGISTRIES)`);
      }
    }
    if (verdict.kind !== 'scratch') this.images.add(ref.trim());
  }

  run(list: Instruction[], onbuild = false): void {
    for (const ins of list) this.instruction(ins, onbuild);
  }

  private instruction(ins: Instruction, onbuild: boolean): void {
    const { no, cmd, rest } = ins;
    const cur = onbuild ? undefined : this.stages[this.stages.length - 1];
    const lookup = this.stageLookup(cur);
    switch (cmd) {
      case 'ONBUILD': {
        const m = /^\s*(\S+)\s*([\s\S]*)$/.exec(rest);
        if (!m) return;
        const trigger = m[1].toUpperCase();
        // as the builders: no trigger of a trigger, no FROM or MAINTAINER (and no recursion here)
        if (trigger === 'ONBUILD' || trigger === 'FROM' || trigger === 'MAINTAINER') this.fail(no, `ONBUILD ${trigger} is not allowed`);
        // triggers run in a later build, where this file's stages and variables mean nothing
        new Checker(this.userId, this.escape, this.registries).run([{ no, cmd: trigger, rest: m[2] }], true);
        return;
      }
      case 'ARG': {
        for (const w of splitWords(rest, this.escape)) {
          const eq = w.indexOf('=');
          const name = eq < 0 ? w : w.slice(0, eq);
          if (!cur) {
            this.meta.set(name, eq < 0 ? null : this.tryExpand(w.slice(eq + 1), this.metaLookup));
          } else {
            // `ARG X` in a stage takes the global default, if any
            const v = eq < 0 ? (this.meta.has(name) ? this.meta.get(name)! : null) : this.tryExpand(w.slice(eq + 1), lookup);
            cur.args.set(name, v);
          }
        }
        return;
      }
      case 'ENV': {
        if (!cur) return;
        const words = splitWords(rest, this.escape);
        if (words.length && !words[0].includes('=')) {
          // legacy `ENV KEY value with spaces`
          cur.env.set(words[0], this.tryExpand(rest.trim().slice(words[0].length).trim(), lookup));
          return;
        }
        for (const w of words) {
          const eq = w.indexOf('=');
          if (eq < 0) continue;
          cur.env.set(w.slice(0, eq), this.tryExpand(w.slice(eq + 1), lookup));
        }
        return;
      }
      case 'FROM': {
        if (onbuild) return;
        const { flags, args } = takeFlags(splitWords(rest, this.escape));
        if (!args.length) this.fail(no, 'FROM needs an image');
        const base = this.expandOr(no, args[0], this.metaLookup, 'FROM');
        const as = args.length >= 3 && args[1].toLowerCase() === 'as' ? this.expandOr(no, args[2], this.metaLookup, 'FROM … AS').toLowerCase() : null;
        const parent = this.stages.find((s) => s.name === base.toLowerCase());
        if (!parent) this.checkImage(no, base, 'FROM');
        // another platform's variant of an image is not the one inspected before the build
        // (images/build-check.ts: its ONBUILD triggers, its owner)
        if (flags.some((f) => f.name === 'platform')) this.fail(no, 'FROM --platform is not supported: berth builds for its Docker daemon\'s own platform');
        this.stages.push({
          name: as,
          env: new Map(parent ? parent.env : []),
          args: new Map(),
          closed: parent ? parent.closed : base.trim().toLowerCase() === 'scratch',
        });
        return;
      }
      case 'COPY':
      case 'ADD': {
        const json = jsonArray(rest.replace(/^(\s*--\S+\s*)+/, ''));
        const { flags, args } = takeFlags(splitWords(rest, this.escape));
        for (const f of flags) if (f.name === 'from') this.checkSource(no, this.expandOr(no, f.raw, lookup, `${cmd} --from`), `${cmd} --from`, !onbuild);
        if (cmd === 'ADD') {
          const srcs = json ? json.slice(0, -1) : args.slice(0, -1);
          for (const raw of srcs) {
            // the builders split the plain form on blanks whatever the quotes and escapes say
            // (`ADD a\ http://127.0.0.1/x /d` is two sources to them): one word here must be one there
            if (!json && /\s/.test(raw)) this.fail(no, `${cmd} source "${raw}" has a blank in it, which the builders would split into two sources; use the JSON form (${cmd} ["a b", "/dest"])`);
            const candidates = [raw];
            if (/[$"'\\`]/.test(raw)) candidates.push(this.expandOr(no, raw, lookup, 'ADD source'));
            if (candidates.some(isRemoteSource)) {
              this.fail(no, `ADD of a URL or git repository ("${candidates[candidates.length - 1]}") is not allowed: the Docker daemon would fetch it from the host's network. Put the file in the uploaded archive instead`);
            }
            if (!onbuild) this.addSources.push(candidates[candidates.length - 1]);
          }
        }
        return;
      }
      case 'RUN': {
        const { flags } = takeFlags(splitWords(rest, this.escape));
        for (const f of flags) {
          if (f.name === 'mount') {
            const value = this.expandOr(no, f.raw, lookup, 'RUN --mount');
            for (const field of csvFields(value)) {
              const eq = field.indexOf('=');
              const key = (eq < 0 ? field : field.slice(0, eq)).trim().toLowerCase();
              if (key === 'from') this.checkSource(no, field.slice(eq + 1).trim(), 'RUN --mount from', !onbuild);
            }
          } else if (f.name === 'network') {
            const v = this.expandOr(no, f.raw, lookup, 'RUN --network').toLowerCase();
            if (v !== 'default' && v !== 'none') this.fail(no, `RUN --network=${v} is not allowed`);
          } else if (f.name === 'security') {
            const v = this.expandOr(no, f.raw, lookup, 'RUN --security').toLowerCase();
            if (v !== 'sandbox') this.fail(no, `RUN --security=${v} is not allowed`);
          }
        }
        return;
      }
      default:
        return;
    }
  }

  private tryExpand(word: string, lookup: Lookup): Value {
    try {
      return expand(word, lookup, this.escape);
    } catch (e) {
      if (e instanceof Unresolved) return undefined;
      throw e;
    }
  }
}

/**
 * Check a Dockerfile for `userId`. Throws DockerfilePolicyError naming the first refused line;
 * returns the image references the build will read (for a check against the daemon at build time).
 */
export function checkDockerfile(text: string, userId: number, registries: readonly string[] = DEFAULT_REGISTRIES): PolicyResult {
  const body = text.replace(/^\uFEFF/, '');
  const odd = AMBIGUOUS_SPACE.exec(body);
  if (odd) {
    const no = body.slice(0, odd.index).split('\n').length;
    const c = odd[0].charCodeAt(0);
    throw new DockerfilePolicyError(no, `contains ${c === 13 ? 'a carriage return not followed by a line feed' : `U+${c.toString(16).toUpperCase().padStart(4, '0')}`}, which the builders and this check would read differently (as a space or not, a line end or not); use spaces, tabs and line feeds`);
  }
  const lines = body.split(/\r?\n/);
  const { escape, directives } = parseDirectives(lines);
  const syntax = directives.get('syntax');
  if (syntax && !ALLOWED_FRONTEND.test(syntax.value)) {
    throw new DockerfilePolicyError(syntax.no, `# syntax=${syntax.value}: only the docker/dockerfile frontend may be named (a frontend image runs the whole build)`);
  }
  const images = new Set<string>();
  const addSources = new Set<string>();
  for (const heredocs of [true, false]) {
    const c = new Checker(userId, escape, registries);
    c.run(instructions(lines, escape, heredocs));
    for (const i of c.images) images.add(i);
    for (const a of c.addSources) addSources.add(a);
  }
  return { images: [...images], addSources: [...addSources] };
}

/** The upload check: a refused Dockerfile is a 400 `dockerfile_refused` naming the line. */
export function checkDockerfilePolicy(text: string, userId: number, registries?: readonly string[]): PolicyResult {
  try {
    return checkDockerfile(text, userId, registries);
  } catch (e) {
    if (e instanceof DockerfilePolicyError) throw new ApiError(400, 'dockerfile_refused', e.message);
    throw e;
  }
}
