// (tests start processes now and stop them soon: ports below the ephemeral range, shared/net.ts)
export { freePortBelowEphemeral as freePort } from '../../shared/net.js';
