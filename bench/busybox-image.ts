/**
 * `npm run busybox-image [-- REF]`: the base image `berth-test/busybox:1` (or REF) made from this
 * host's static busybox, for machines that reach no registry (apps `FROM` it, as the tests do).
 */
import Docker from 'dockerode';
import { BUSYBOX, ensureBusyboxImage } from './lib/busybox-image.js';

const ref = process.argv[2] ?? 'berth-test/busybox:1';
if (!/^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(ref)) {
  process.stderr.write(`busybox-image: "${ref}" is not an image reference like berth-test/busybox:1\n`);
  process.exit(2);
}
try {
  await ensureBusyboxImage(new Docker(), ref);
  process.stdout.write(`${ref} is ready (from ${BUSYBOX}): FROM ${ref} in a Dockerfile\n`);
} catch (e) {
  process.stderr.write(`busybox-image: ${(e as Error).message}\n`);
  process.exit(1);
}
