import { createRequire } from 'node:module';
import type * as UWS from 'uWebSockets.js';

const require = createRequire(import.meta.url);

/**
 * Largest write that always fits uWS's 16 KiB cork buffer together with chunk framing: one
 * send(), not two (server/response.ts writes body chunks at most this large; the upstream
 * response parser gathers small chunks up to it).
 */
export const CORKED_WRITE_MAX = 16 * 1024 - 64;

/**
 * Load uWebSockets.js and refuse its silent `ws` fallback: the fallback is an order of magnitude
 * slower and would turn a broken install into a quietly slow proxy.
 */
export function loadUws(): typeof UWS {
  if (process.env.UWS_USE_FALLBACK && !['0', 'false', ''].includes(process.env.UWS_USE_FALLBACK.toLowerCase())) {
    throw new Error('UWS_USE_FALLBACK is set: berth refuses to run the proxy on the slow ws fallback; unset it.');
  }
  // The package prints a warning and falls back when the native binary fails to load; detect that.
  const origWarn = console.warn;
  let warned = '';
  console.warn = (...a: unknown[]) => { warned += a.join(' ') + '\n'; };
  let mod: typeof UWS & { getParts?: unknown; H3App?: unknown };
  try {
    mod = require('uWebSockets.js');
  } finally {
    console.warn = origWarn;
  }
  if (typeof mod.getParts !== 'function' || typeof mod.SSLApp !== 'function') {
    throw new Error(
      `uWebSockets.js native binary did not load (Node ${process.versions.node}, ABI ${process.versions.modules}, ` +
      `${process.platform}-${process.arch}); berth requires it and refuses the ws fallback. ` +
      `Use Node 20 (the binaries stop at ABI 115).\n${warned}`,
    );
  }
  return mod;
}
