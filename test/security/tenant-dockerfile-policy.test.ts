import { describe, expect, it } from 'vitest';
import { DockerfilePolicyError, MAX_DOCKERFILE_BYTES, checkDockerfile, checkImageRef } from '../../control-plane/images/dockerfile-policy.js';
import { DEFAULT_REGISTRIES, parseRegistries, registryAllowed, registryOf } from '../../control-plane/images/registries.js';

/** Unit tests of the Dockerfile policy (tenant isolation, DESIGN.md "Security model"). User 1 checks throughout. */
const ME = 1;
const refused = (df: string, user = ME): DockerfilePolicyError => {
  try {
    checkDockerfile(df, user);
  } catch (e) {
    if (e instanceof DockerfilePolicyError) return e;
    throw e;
  }
  throw new Error(`expected the Dockerfile to be refused:\n${df}`);
};
const allowed = (df: string, user = ME) => checkDockerfile(df, user);

describe('ADD of URLs and git repositories', () => {
  it('refuses ADD <url> and names the line', () => {
    const e = refused('FROM busybox\nRUN echo hi\nADD http://127.0.0.1:9901/routes /routes.json\n');
    expect(e.line).toBe(3);
    expect(e.message).toMatch(/^Dockerfile line 3: ADD of a URL/);
    expect(e.message).toContain('http://127.0.0.1:9901/routes');
  });

  it.each([
    ['lower-case instruction', 'from busybox\nadd http://127.0.0.1:3000/metrics /m\n', 2],
    ['https', 'FROM busybox\nADD https://example.com/x /x\n', 2],
    ['--chmod and --checksum flags', 'FROM busybox\nADD --chmod=644 --checksum=sha256:0123 http://127.0.0.1/x /x\n', 2],
    ['--link flag without value', 'FROM busybox\nADD --link http://127.0.0.1/x /x\n', 2],
    ['several sources, URL second', 'FROM busybox\nADD a.txt http://127.0.0.1/x /dest/\n', 2],
    ['JSON array form', 'FROM busybox\nADD ["http://127.0.0.1:9901/routes", "/r"]\n', 2],
    ['JSON array with flags', 'FROM busybox\nADD --chown=1:1 ["http://127.0.0.1/x", "/r"]\n', 2],
    ['line continuation', 'FROM busybox\nADD \\\n  http://127.0.0.1:9901/routes \\\n  /r\n', 2],
    ['continuation inside the word', 'FROM busybox\nADD http://127.0.0.1:99\\\n01/routes /r\n', 2],
    ['comment inside a continuation', 'FROM busybox\nRUN true\nADD \\\n# a comment\n  http://127.0.0.1/x /r\n', 3],
    ['escape directive (backtick)', '# escape=`\nFROM busybox\nADD `\n  http://127.0.0.1/x `\n  /r\n', 3],
    ['quoted', 'FROM busybox\nADD "http://127.0.0.1/x" /r\n', 2],
    ['escaped characters', 'FROM busybox\nADD h\\ttp://127.0.0.1/x /r\n', 2],
    ['behind an ARG default', 'FROM busybox\nARG U=http://127.0.0.1:3000/metrics\nADD ${U} /m\n', 3],
    ['behind an ENV', 'FROM busybox\nENV U http://127.0.0.1:3000/metrics\nADD $U /m\n', 3],
    ['git URL', 'FROM busybox\nADD git@github.com:moby/buildkit.git /src\n', 2],
    ['git:// URL', 'FROM busybox\nADD git://example.com/repo.git /src\n', 2],
    ['github shorthand', 'FROM busybox\nADD github.com/moby/buildkit /src\n', 2],
    ['https git with ref', 'FROM busybox\nADD --keep-git-dir=true https://example.com/r.git#main /src\n', 2],
    ['CRLF line ends', 'FROM busybox\r\nADD http://127.0.0.1/x /r\r\n', 2],
    ['ONBUILD trigger', 'FROM busybox\nONBUILD ADD http://127.0.0.1/x /r\n', 2],
  ])('refuses %s', (_name, df, line) => {
    const e = refused(df);
    expect(e.line).toBe(line);
    expect(e.message).toMatch(/ADD of a URL or git repository/);
  });

  it('an ADD source with a blank in the plain form is refused (the builders split it: `a\\ http://…` is two sources to them)', () => {
    for (const df of ['FROM busybox\nADD Dockerfile\\ http://127.0.0.1:9901/admin /d/\n', 'FROM busybox\nADD Dockerfile\\ b.tar /d/\n', 'FROM busybox\nADD "a b.txt" /d/\n']) {
      expect(refused(df).message, df).toMatch(/has a blank in it.*use the JSON form/);
    }
    allowed('FROM busybox\nADD ["a b.txt", "/x"]\n');
  });

  it('allows ADD of local files and archives, and COPY', () => {
    allowed('FROM busybox\nADD app.tar.gz /app/\nADD --chmod=755 run.sh /run.sh\nADD ["a b.txt", "/x"]\nCOPY www /www\n');
  });

  it('a URL inside a heredoc body (BuildKit reading) is data, but the classic builder would run it: refused', () => {
    // BuildKit: the body is a file's content. The classic builder: `ADD …` is an instruction. Both readings are checked.
    const e = refused('FROM busybox\nRUN <<CMD\necho hi\nADD http://127.0.0.1:9901/routes /r\nCMD\n');
    expect(e.line).toBe(4);
  });

  it('heredoc bodies are not read as instructions otherwise', () => {
    allowed('FROM busybox\nCOPY <<EOF /etc/motd\nhello, see http://example.com\nEOF\nRUN <<-EOT sh\n\techo ok\n\tEOT\nCMD ["sh"]\n');
  });

  it('refuses an ADD source that depends on a variable it cannot know', () => {
    const e = refused('FROM busybox\nADD $FROM_BASE_IMAGE /r\n');
    expect(e.message).toMatch(/FROM_BASE_IMAGE.*cannot be resolved/);
  });
});

describe('image references', () => {
  it('refuses FROM another user\'s berth image, naming the line', () => {
    const e = refused('# a comment\nFROM berth-u2-i1:latest\nRUN cat /secret\n');
    expect(e.line).toBe(2);
    expect(e.message).toMatch(/another user's image/);
  });

  it.each([
    ['untagged', 'FROM berth-u2-i1\n'],
    ['upper case', 'FROM BERTH-U2-I1:latest\n'],
    ['docker.io/library spelling', 'FROM docker.io/library/berth-u2-i1:latest\n'],
    ['library/ spelling', 'FROM library/berth-u2-i1\n'],
    ['by digest', 'FROM berth-u2-i1@sha256:' + 'a'.repeat(64) + '\n'],
    ['user 12 is not user 1', 'FROM berth-u12-i3:v1\n'],
    ['with --platform', 'FROM --platform=linux/amd64 berth-u2-i1\n'],
    ['ARG default before FROM', 'ARG BASE=berth-u2-i1:latest\nFROM ${BASE}\n'],
    ['$VAR form', 'ARG BASE=berth-u2-i1\nFROM $BASE\n'],
    ['nested default', 'ARG U=2\nFROM berth-u${U}-i1\n'],
    ['${VAR:-default} with ARG unset', 'ARG BASE\nFROM ${BASE:-berth-u2-i1}\n'],
    ['COPY --from', 'FROM busybox\nCOPY --from=berth-u2-i1:latest /secret /s\n'],
    ['COPY --from via ARG in stage', 'FROM busybox\nARG SRC=berth-u2-i1\nCOPY --from=$SRC /secret /s\n'],
    ['COPY --from via global ARG redeclared', 'ARG SRC=berth-u2-i1\nFROM busybox\nARG SRC\nCOPY --from=${SRC} /secret /s\n'],
    ['RUN --mount from=', 'FROM busybox\nRUN --mount=from=berth-u2-i1,target=/x cat /x/secret\n'],
    ['RUN --mount=type=bind,from=', 'FROM busybox\nRUN --mount=type=bind,from=berth-u2-i1:latest,source=/,target=/x cat /x/secret\n'],
    ['RUN --mount=type=cache,from=', 'FROM busybox\nRUN --mount=type=cache,target=/c,from=berth-u2-i1 ls /c\n'],
    ['RUN --mount quoted', 'FROM busybox\nRUN --mount="type=bind,from=berth-u2-i1,target=/x" ls\n'],
    ['ONBUILD COPY --from', 'FROM busybox\nONBUILD COPY --from=berth-u2-i1 /s /s\n'],
    ['a stage name declared later is not a stage yet', 'FROM busybox\nCOPY --from=berth-u2-i1 /s /s\nFROM busybox AS berth-u2-i1\n'],
  ])('refuses %s', (_name, df) => {
    expect(refused(df).message).toMatch(/another user's image/);
  });

  it.each([
    ['sha256 id', 'FROM sha256:' + 'b'.repeat(64) + '\n'],
    ['64-hex id', 'FROM ' + 'c'.repeat(64) + '\n'],
    ['short id prefix', 'FROM 4e5f6a7b\n'],
    ['COPY --from an id', 'FROM busybox\nCOPY --from=sha256:' + 'd'.repeat(64) + ' /s /s\n'],
    ['mount from a short id', 'FROM busybox\nRUN --mount=from=abc123,target=/x ls\n'],
  ])('refuses image ids: %s', (_name, df) => {
    expect(refused(df).message).toMatch(/image id/);
  });

  it.each([
    ['ARG without default used in FROM', 'ARG BASE\nFROM $BASE\n'],
    ['undeclared variable in FROM', 'FROM ${NOPE}\n'],
    ['COPY --from a variable of the base image', 'FROM busybox\nCOPY --from=$SOMETHING /s /s\n'],
    ['${VAR:-x} in a stage whose base environment is unknown', 'FROM busybox\nCOPY --from=${X:-busybox} /s /s\n'],
  ])('refuses unresolvable references: %s', (_name, df) => {
    expect(refused(df).message).toMatch(/cannot be resolved/);
  });

  it('allows own images, stage names, stage indexes, scratch and ordinary images', () => {
    const r = allowed([
      'ARG BASE=berth-test/busybox:1',
      'FROM ${BASE} AS Build',
      'RUN echo build > /out',
      'FROM berth-u1-i7:v2 AS second',
      'COPY --from=build /out /out',
      'COPY --from=0 /out /out0',
      'RUN --mount=type=bind,from=build,target=/b ls /b',
      'RUN --mount=type=cache,target=/root/.cache ls',
      'FROM scratch',
      'COPY --from=second /out /out',
      'COPY --from=docker.io/library/busybox:1.36 /bin/busybox /bin/busybox',
      'ARG X',
      'COPY --from=${X:-build} /out /x', // scratch stage: X is known to be unset
    ].join('\n'));
    expect(r.images.sort()).toEqual(['berth-test/busybox:1', 'berth-u1-i7:v2', 'docker.io/library/busybox:1.36']);
  });

  it('a stage named like a berth image shadows the image (that is what the builders do)', () => {
    allowed('FROM busybox AS berth-u2-i1\nFROM berth-u2-i1\nCOPY --from=berth-u2-i1 /a /a\n');
  });

  it('ENV of an earlier stage carries into a child stage; ARG does not', () => {
    allowed('FROM scratch AS base\nENV SRC=base\nFROM base\nCOPY --from=$SRC /a /a\n');
    expect(refused('FROM scratch AS base\nARG SRC=base\nFROM base\nCOPY --from=$SRC /a /a\n').message).toMatch(/cannot be resolved/);
  });

  it('checkImageRef in isolation', () => {
    expect(checkImageRef('berth-u1-i2:latest', 1)).toEqual({ ok: true, kind: 'own' });
    expect(checkImageRef('busybox', 1)).toEqual({ ok: true, kind: 'image' });
    expect(checkImageRef('cafe:1', 1)).toEqual({ ok: true, kind: 'image' }); // with a tag it is only a name
    expect(checkImageRef('localhost:5000/berth-u2-i1:1', 1).ok).toBe(false);
    expect(checkImageRef('berth-u2-i1', 2)).toEqual({ ok: true, kind: 'own' });
    expect(checkImageRef('', 1).ok).toBe(false);
  });
});

describe('other build escapes', () => {
  it.each([
    ['RUN --network=host', 'FROM busybox\nRUN --network=host wget http://127.0.0.1:9901/routes\n'],
    ['RUN --security=insecure', 'FROM busybox\nRUN --security=insecure true\n'],
    ['a custom frontend', '# syntax=berth-u2-i1:latest\nFROM busybox\n'],
  ])('refuses %s', (_name, df) => {
    refused(df);
  });

  it('allows RUN --network=none and the docker/dockerfile frontend', () => {
    allowed('# syntax=docker/dockerfile:1.7\nFROM busybox\nRUN --network=none true\n');
  });

  it('an invalid escape directive is refused; a directive after a comment is only a comment', () => {
    expect(refused('# escape=x\nFROM busybox\n').message).toMatch(/escape/);
    // not a directive here: `\` stays the escape character, so the backtick does not continue the line
    allowed('# hello\n# escape=`\nFROM busybox\nRUN echo `\nADD local.txt /x\n');
  });
});

describe('hostile Dockerfile text costs bounded time (the check runs on the API event loop)', () => {
  const K = MAX_DOCKERFILE_BYTES;
  const n = (unit: string) => Math.floor((K - 64) / unit.length);
  it.each([
    // `(.+?)[ \t]*$` on a directive backtracked quadratically: 80,000 blanks took 4.6 s
    ['a parser directive with a long run of blanks', '#syntax=x' + ' '.repeat(K - 64) + 'y\nFROM busybox\n'],
    // each level rescanned the word, then the stack overflowed (a 500)
    ['nested ${A:-${A:-…}}', 'FROM busybox\nENV X=' + '${A:-'.repeat(n('${A:-}')) + 'z' + '}'.repeat(n('${A:-}')) + '\n'],
    ['nested substitutions in FROM', 'ARG A=1\nFROM ' + '${B:-'.repeat(n('${B:-}')) + 'busybox' + '}'.repeat(n('${B:-}')) + '\n'],
    ['a word of dollars', 'FROM busybox\nENV X="' + '$'.repeat(K - 64) + '\n'],
    ['a run of flags', 'FROM busybox\nCOPY ' + '--a'.repeat(n('--a')) + ' x y\n'],
    ['escaped blanks', 'FROM busybox\nRUN ' + '\\ '.repeat(n('\\ ')) + 'x\n'],
  ])('%s: answered in well under a second', (_what, df) => {
    const t0 = performance.now();
    try {
      checkDockerfile(df, ME);
    } catch (e) {
      if (!(e instanceof DockerfilePolicyError)) throw e; // refused with a message is fine; a crash is not
    }
    expect(performance.now() - t0).toBeLessThan(500);
  });

  it('a directive keeps its value, blanks trimmed; one nested too deep is not resolved', () => {
    expect(refused('# syntax =  berth-u2-i1:latest \t \nFROM busybox\n').message).toMatch(/berth-u2-i1:latest/);
    allowed('#syntax=docker/dockerfile:1.7   \nFROM busybox\n');
    const deep = 'ARG A=busybox\nFROM ' + '${B:-'.repeat(17) + '${A}' + '}'.repeat(17) + '\n';
    expect(refused(deep).message).toMatch(/nested deeper than 16/);
    allowed('ARG A=busybox\nFROM ' + '${B:-'.repeat(16) + '${A}' + '}'.repeat(16) + '\n');
  });
});

describe('FROM --platform', () => {
  it('is refused: another platform\'s variant is not the image inspected before the build (its ONBUILD triggers, its owner)', () => {
    const e = refused('FROM busybox\nFROM --platform=linux/arm64 busybox AS other\n');
    expect(e.line).toBe(2);
    expect(e.message).toMatch(/FROM --platform is not supported/);
    allowed('FROM busybox AS a\nFROM a\n');
  });
});

describe('text the builders read differently from this check', () => {
  const URL_ADD = 'ADD http://127.0.0.1:9901/routes /r';
  it.each([
    ['NEL before the instruction (a space to Go, not to JavaScript)', `FROM busybox\n\u0085${URL_ADD}\n`, 2, /U\+0085/],
    ['NEL before a FROM of another tenant', 'FROM busybox\n\u0085FROM berth-u2-i7:latest\n', 2, /U\+0085/],
    ['NBSP', `FROM busybox\n\u00a0${URL_ADD}\n`, 2, /U\+00A0/],
    ['an ideographic space', `FROM busybox\nRUN true\n\u3000${URL_ADD}\n`, 3, /U\+3000/],
    ['a line separator', `FROM busybox\u2028${URL_ADD}\n`, 1, /U\+2028/],
    ['form feed', 'FROM busybox\n#\fescape=`\n', 2, /U\+000C/],
    ['vertical tab', 'FROM busybox\nRUN\vtrue\n', 2, /U\+000B/],
    ['a lone carriage return', 'FROM busybox\r#\rescape=`\nRUN x\n', 1, /carriage return/],
    ['a JSON form ending in NEL', `FROM busybox\nADD ["http://127.0.0.1:9901/routes","/r"]\u0085\n`, 2, /U\+0085/],
    ['a byte-order mark inside', 'FROM busybox\n\ufeffRUN true\n', 2, /U\+FEFF/],
  ])('refuses %s, naming the line', (_name, df, line, why) => {
    const e = refused(df);
    expect(e.line).toBe(line);
    expect(e.message).toMatch(why);
  });

  it('a leading byte-order mark, CRLF line ends, tabs and spaces are fine', () => {
    allowed('\ufeffFROM busybox\r\n\tRUN  echo hi \t\r\nCOPY a /a\r\n');
  });

  it('a parser directive after leading blanks is one (the builders trim them): the escape character it sets is the one used', () => {
    // ` # escape=\``: the builders use the backtick, so `\` does not continue the RUN line and the ADD is an instruction
    for (const lead of [' ', '\t', '  \t ']) {
      const e = refused(`${lead}# escape=\`\nFROM busybox\nRUN echo \\\n${URL_ADD}\n`);
      expect([e.line, /ADD of a URL/.test(e.message)]).toEqual([4, true]);
    }
    // and with it the backtick continues lines
    allowed(' # escape=`\nFROM busybox\nRUN echo `\n  ADD http://127.0.0.1/x /r\n');
  });

  it('an escape directive after `# check=` is refused (older builders stop reading directives there)', () => {
    expect(refused('# check=skip=all\n# escape=`\nFROM busybox\n').message).toMatch(/after "# check="/);
    allowed('# escape=`\n# check=skip=all\nFROM busybox\n');
  });

  it('a line ending in an escaped escape character does not continue (the builders\' rule)', () => {
    const e = refused(`FROM busybox\nRUN echo \\\\\n${URL_ADD}\n`);
    expect([e.line, /ADD of a URL/.test(e.message)]).toEqual([3, true]);
    const b = refused(`# escape=\`\nFROM busybox\nRUN echo \`\`\n${URL_ADD}\n`);
    expect([b.line, /ADD of a URL/.test(b.message)]).toEqual([4, true]);
    // one escape character, blanks after it, or one alone on a line: a continuation
    expect(refused('FROM busybox\nADD \\ \t\n  http://127.0.0.1/x /r\n').line).toBe(2);
    expect(refused('FROM busybox\nADD http://127.0.0.1/x \\\n\\\n /r\n').line).toBe(2);
    allowed('FROM busybox\nRUN echo a \\\n  b \\\n  c\n');
  });

  it('ONBUILD ONBUILD, FROM and MAINTAINER are refused (as the builders do); a long chain is a refusal, not a crash', () => {
    expect(refused('FROM busybox\nONBUILD ONBUILD RUN true\n').message).toMatch(/ONBUILD ONBUILD is not allowed/);
    expect(refused('FROM busybox\nONBUILD FROM berth-u2-i1\n').message).toMatch(/ONBUILD FROM is not allowed/);
    expect(refused('FROM busybox\nonbuild maintainer me\n').message).toMatch(/ONBUILD MAINTAINER is not allowed/);
    const chain = refused('FROM busybox\n' + 'ONBUILD '.repeat(5000) + 'RUN true\n');
    expect(chain.line).toBe(2);
  });
});

describe('registries the daemon may pull from', () => {
  it.each([
    ['a loopback registry', 'FROM 127.0.0.1:5000/a/b:c\n', '127.0.0.1:5000'],
    ['localhost', 'FROM localhost/a/b\n', 'localhost'],
    ['a host on the internet', 'FROM registry.evil.example/a:1\n', 'registry.evil.example'],
    ['an upper-case first component (a registry to Docker)', 'FROM Evil/x:1\n', 'evil'],
    ['a port on an allowed host', 'FROM ghcr.io:443/x/y\n', 'ghcr.io:443'],
    ['COPY --from', 'FROM busybox\nCOPY --from=127.0.0.1:5000/x:1 /a /b\n', '127.0.0.1:5000'],
    ['RUN --mount from', 'FROM busybox\nRUN --mount=type=bind,from=localhost:5000/x,target=/x true\n', 'localhost:5000'],
    ['behind an ARG', 'ARG R=10.0.0.1:5000\nFROM ${R}/x\n', '10.0.0.1:5000'],
    // the user's own repository name on another registry is still that registry
    ['an own repository name on a loopback registry', 'FROM 127.0.0.1:9901/berth-u1-x\n', '127.0.0.1:9901'],
    ['an own repository path on a foreign registry', 'FROM attacker.example/berth-u1/x:1\n', 'attacker.example'],
    ['COPY --from an own name on a private address', 'FROM busybox\nCOPY --from=10.0.0.1:5000/berth-u1 /a /b\n', '10.0.0.1:5000'],
  ])('refuses %s', (_name, df, registry) => {
    expect(refused(df).message).toContain(`registry "${registry}"`);
  });

  it('allows Docker Hub (any spelling), the public registries, and what the operator lists', () => {
    const r = allowed('FROM busybox\nFROM library/busybox:1\nFROM docker.io/library/busybox\nFROM index.docker.io/x/y\nFROM ghcr.io/o/i:1\nFROM quay.io/o/i\nFROM us-docker.pkg.dev/p/r/i:1\nFROM mcr.microsoft.com/dotnet/sdk:8.0\nFROM berth-u1-i3:latest\nFROM scratch\n');
    expect(r.images).toContain('us-docker.pkg.dev/p/r/i:1');
    checkDockerfile('FROM localhost:5000/x:1\n', ME, ['localhost:5000']);
    // the user's own berth tags are on the daemon, whatever registries are allowed (a pull is checked before it happens)
    checkDockerfile('FROM berth-u1-i3-cabc:latest\nCOPY --from=berth-u1-i2 /a /b\n', ME, ['registry.internal']);
    expect(() => checkDockerfile('FROM busybox\n', ME, ['ghcr.io'])).toThrow(/registry "docker.io"/);
  });

  it('registryOf and BERTH_REGISTRIES parsing', () => {
    expect(['busybox', 'a/b', 'docker.io/a/b', 'registry-1.docker.io/a', 'localhost/a', 'Foo/a', 'x.io/a', 'x:1/a'].map(registryOf))
      .toEqual(['docker.io', 'docker.io', 'docker.io', 'docker.io', 'localhost', 'foo', 'x.io', 'x:1']);
    expect(parseRegistries(undefined)).toEqual([...DEFAULT_REGISTRIES]);
    expect(parseRegistries(' GHCR.io , localhost:5000,*.example.com ')).toEqual(['ghcr.io', 'localhost:5000', '*.example.com']);
    for (const bad of ['http://x.io', 'x.io/path', '*.x.io:5000', 'a b', '-x.io', 'x..io', 'x.io:99999', 'x.io:0', ',', ' , ']) expect(() => parseRegistries(bad), bad).toThrow(/BERTH_REGISTRIES/);
    expect(registryAllowed('eu-docker.pkg.dev', ['*.pkg.dev'])).toBe(true);
    expect(registryAllowed('pkg.dev', ['*.pkg.dev'])).toBe(false);
    expect(registryAllowed('x.pkg.dev:5000', ['*.pkg.dev'])).toBe(false);
  });
});
