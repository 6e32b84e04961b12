import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { FastifyRequest } from 'fastify';
import { ApiError, badRequest } from '../http/errors.js';

export interface ReceivedUpload {
  fields: Record<string, string>;
  /** Path of the uploaded archive on disk, or undefined when no file part was sent. */
  file: string | undefined;
  cleanup(): Promise<void>;
}

/**
 * Read a multipart request: text fields into an object, the single `file` part streamed to
 * DATA_DIR/uploads with the size limit enforced while streaming (413 past it).
 */
export async function receiveUpload(req: FastifyRequest, uploadDir: string, maxBytes: number): Promise<ReceivedUpload> {
  if (!req.isMultipart()) throw new ApiError(415, 'unsupported_media_type', 'POST /api/images expects multipart/form-data');
  await mkdir(uploadDir, { recursive: true });
  const fields: Record<string, string> = {};
  let file: string | undefined;
  const cleanup = async () => { if (file) await rm(file, { force: true }); };
  try {
    for await (const part of req.parts({ limits: { fileSize: maxBytes, files: 1, fields: 20, fieldSize: 4096, parts: 22 } })) {
      if (part.type === 'file') {
        if (part.fieldname !== 'file') { part.file.resume(); throw badRequest(`unexpected file field "${part.fieldname}"; send the archive as "file"`); }
        file = join(uploadDir, `${randomUUID()}.upload`);
        await pipeline(part.file, createWriteStream(file, { mode: 0o600 }));
        if (part.file.truncated) throw tooLarge(maxBytes);
      } else {
        if (Object.prototype.hasOwnProperty.call(fields, part.fieldname)) throw badRequest(`field "${part.fieldname}" given more than once`);
        if (part.valueTruncated) throw badRequest(`field "${part.fieldname}" is too long`);
        fields[part.fieldname] = String(part.value);
      }
    }
  } catch (e) {
    await cleanup();
    const err = e as { code?: string; statusCode?: number };
    if (err.code === 'FST_FILES_LIMIT') throw badRequest('send exactly one file, as the "file" field');
    if (err.code === 'FST_PARTS_LIMIT' || err.code === 'FST_FIELDS_LIMIT') throw badRequest('too many form fields');
    if (err.code === 'FST_REQ_FILE_TOO_LARGE' || err.statusCode === 413) throw tooLarge(maxBytes);
    if (e instanceof ApiError) throw e;
    if (err.statusCode && err.statusCode < 500) throw badRequest(`malformed multipart body: ${(e as Error).message}`);
    throw e;
  }
  return { fields, file, cleanup };
}

const tooLarge = (max: number) => new ApiError(413, 'payload_too_large', `the upload is larger than the ${max}-byte limit`);
