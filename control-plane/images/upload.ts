import { randomUUID } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { FastifyRequest } from 'fastify';
import { ApiError, badRequest } from '../http/errors.js';

/**
 * Most bytes of one form field: `env` carries up to 64 KiB of variables as JSON, escaped (the
 * other fields are short, and their schema says how short).
 */
export const FIELD_MAX_BYTES = 256 * 1024;

export interface ReceivedUpload {
  fields: Record<string, string>;
  /** Path of the uploaded archive on disk, or undefined when no file part was sent. */
  file: string | undefined;
  cleanup(): Promise<void>;
}

/**
 * Read a multipart request: text fields into an object, the single `file` part streamed to
 * DATA_DIR/uploads with the size limit enforced while streaming (413 past it).
 *
 * A body that is cut short — the client closed or reset the connection before Content-Length
 * bytes, or the multipart data ends inside a part or without its closing boundary — is the
 * client's error: 400 (which only reaches a client whose socket is still open), and the partial
 * upload file is removed before this returns (after its write stream has closed, so a late
 * open cannot re-create it). Errors of this process (disk full, …) stay 500s.
 */
export async function receiveUpload(req: FastifyRequest, uploadDir: string, maxBytes: number): Promise<ReceivedUpload> {
  if (!req.isMultipart()) throw new ApiError(415, 'unsupported_media_type', 'POST /api/images expects multipart/form-data');
  await mkdir(uploadDir, { recursive: true });
  const fields: Record<string, string> = {};
  let file: string | undefined;
  let out: WriteStream | undefined;
  const cleanup = async () => {
    if (out && !out.closed) { out.destroy(); await once(out, 'close').catch(() => {}); }
    if (file) await rm(file, { force: true });
  };
  try {
    for await (const part of req.parts({ limits: { fileSize: maxBytes, files: 1, fields: 20, fieldSize: FIELD_MAX_BYTES, parts: 22 } })) {
      if (part.type === 'file') {
        if (part.fieldname !== 'file') { part.file.resume(); throw badRequest(`unexpected file field "${part.fieldname}"; send the archive as "file"`); }
        file = join(uploadDir, `${randomUUID()}.upload`);
        out = createWriteStream(file, { mode: 0o600 });
        await pipeline(part.file, out);
        if (part.file.truncated) throw tooLarge(maxBytes);
      } else {
        if (Object.prototype.hasOwnProperty.call(fields, part.fieldname)) throw badRequest(`field "${part.fieldname}" given more than once`);
        if (part.valueTruncated) throw badRequest(`field "${part.fieldname}" is too long`);
        fields[part.fieldname] = String(part.value);
      }
    }
    // The parser is done at the closing boundary; the rest of the body (a chunked terminator,
    // an epilogue) may still be on its way. A body the client never completes is refused.
    if (!req.raw.complete && !req.raw.destroyed) await Promise.race([once(req.raw, 'end'), once(req.raw, 'close')]).catch(() => {});
    if (!req.raw.complete) throw incomplete('the connection closed before the whole body arrived');
  } catch (e) {
    await cleanup();
    const err = e as { code?: string; statusCode?: number };
    if (err.code === 'FST_FILES_LIMIT') throw badRequest('send exactly one file, as the "file" field');
    if (err.code === 'FST_PARTS_LIMIT' || err.code === 'FST_FIELDS_LIMIT') throw badRequest('too many form fields');
    if (err.code === 'FST_REQ_FILE_TOO_LARGE' || err.statusCode === 413) throw tooLarge(maxBytes);
    if (e instanceof ApiError) throw e;
    if (err.statusCode && err.statusCode < 500) throw badRequest(`malformed multipart body: ${(e as Error).message}`);
    if (isClientBodyError(e, req)) throw incomplete((e as Error).message);
    throw e;
  }
  return { fields, file, cleanup };
}

const tooLarge = (max: number) => new ApiError(413, 'payload_too_large', `the upload is larger than the ${max}-byte limit`);
const incomplete = (why: string) => badRequest(`the multipart body is incomplete or malformed (${why}); send the whole form, ending with its closing boundary`);

/**
 * Did the request body fail, rather than this process? The client went away mid-body, or the
 * multipart parser (busboy) rejected the data: "Unexpected end of multipart data", "Part
 * terminated early…", a malformed header. System errors (a `syscall`: disk full, permissions)
 * and programming errors are ours.
 */
function isClientBodyError(e: unknown, req: FastifyRequest): boolean {
  if (req.raw.readableAborted || (req.raw.destroyed && !req.raw.complete)) return true;
  if (!(e instanceof Error) || e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError || e instanceof SyntaxError) return false;
  return (e as NodeJS.ErrnoException).syscall === undefined;
}
