/**
 * Cryptographic identity layer (OpenPGP.js 6): node and coordinator keys, signed HTTP requests,
 * sealed (signed + encrypted) model updates, signed artifacts and key rotation.
 * Pure: imports only openpgp, zod and Node built-ins.
 */
export * from './errors.ts';
export * from './keys.ts';
export * from './request-signing.ts';
export * from './sealed-update.ts';
export * from './signed-artifact.ts';
