/** `berth logout` lives beside `berth login` (same credentials file). */
export { runLogout as run } from './login.js';
