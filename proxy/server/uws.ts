import { createRequire } from 'node:module';
import type * as UWS from 'uWebSockets.js';

const require = createRequire(import.meta.url);

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
