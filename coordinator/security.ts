import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** A random secret (256 bits), URL-safe. Tokens and API keys are only ever stored hashed. */
export function newSecret(prefix: string): string {
  return `${prefix}_${randomBytes(32).toString('base64url')}`;
}

export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(9).toString('base64url').replace(/[-_]/g, 'x')}`;
}

/** SHA-256 suffices for 256-bit random secrets: there is no low-entropy password to stretch. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function constantTimeEquals(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
