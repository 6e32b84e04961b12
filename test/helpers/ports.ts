export { freePort } from '../../shared/net.js';
