import { describe, expect, it } from 'vitest';
import { isLeftover, MAX_STEP_IMAGES, StepImages } from '../../control-plane/runtime/build-leftovers.js';

// Removing them from a real daemon: test/control-plane/build.test.ts ("a failed build leaves…").
describe('build leftovers: the images a failed build committed', () => {
  it('reads the committed-step lines of the classic builder, and nothing else', () => {
    const s = new StepImages();
    s.see('Step 1/3 : FROM busybox\n');
    s.see(' ---> b9c71c82e3ef\n');
    s.see('Step 2/3 : RUN echo hi\n');
    s.see(' ---> Running in 44f52f0ed8a9\n');
    s.see('hi\n');
    s.see('Removing intermediate container 44f52f0ed8a9\n');
    s.see(' ---> 6cb876ba5ccd\n');
    // several lines in one message, a repeat, and look-alikes that are not an image id
    s.see(' ---> 75d91b6eda38\n ---> 6cb876ba5ccd\n --->  73a734049091\n ---> 73A734049091\n ---> 73a73404909\nx ---> 73a734049091\n');
    s.see(' ---> 73a734049091');
    expect([...s.ids]).toEqual(['b9c71c82e3ef', '6cb876ba5ccd', '75d91b6eda38', '73a734049091']);
  });

  it('keeps the first ids when a build prints more than any Dockerfile has steps (the steps before the flood are found)', () => {
    const s = new StepImages();
    const id = (i: number) => i.toString(16).padStart(12, '0');
    s.see(Array.from({ length: MAX_STEP_IMAGES + 10 }, (_, i) => ` ---> ${id(i)}`).join('\n'));
    expect(s.ids.size).toBe(MAX_STEP_IMAGES);
    expect(s.ids.has(id(0))).toBe(true);
    expect(s.ids.has(id(MAX_STEP_IMAGES))).toBe(false);
    // a full id counts by its first 12 digits, as the daemon prints it
    const t = new StepImages();
    t.see(` ---> ${'ab'.repeat(32)}`);
    expect([...t.ids]).toEqual(['abababababab']);
  });

  it('a leftover is untagged, pulled by no digest, and made since the build began', () => {
    const since = Date.parse('2026-12-01T15:58:35Z');
    const at = (iso: string) => ({ RepoTags: [] as string[], RepoDigests: [] as string[], created: Date.parse(iso) });
    expect(isLeftover(at('2026-12-01T15:58:36.774243917Z'), since)).toBe(true);
    expect(isLeftover({ ...at('2026-12-01T15:58:36Z'), RepoTags: ['<none>:<none>'], RepoDigests: ['<none>@<none>'] }, since)).toBe(true);
    // another app's image, a base image pulled by digest, an image from before the build, no date
    expect(isLeftover({ ...at('2026-12-01T15:58:36Z'), RepoTags: ['berth-u2-i3:v1'] }, since)).toBe(false);
    expect(isLeftover({ ...at('2026-12-01T15:58:36Z'), RepoDigests: ['busybox@sha256:' + 'a'.repeat(64)] }, since)).toBe(false);
    expect(isLeftover(at('2026-12-01T15:37:31Z'), since)).toBe(false);
    expect(isLeftover(at('yesterday'), since)).toBe(false);
  });
});
