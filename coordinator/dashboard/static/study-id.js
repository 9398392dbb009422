// The study id the page's hash names, checked before it goes into any API path: the hash is
// whatever a link says, and an unchecked id ('..%2Fnodes%3F') would make this tab call other
// routes with its token.

// The API's Id (protocols/messages.ts): letters, digits and . _ : ~ - only, 1 to 200 characters.
const ID = /^[A-Za-z0-9._:~-]{1,200}$/;

/**
 * The study a `#/studies/<id>` hash names: `{ id }` (safe in a path: encodeURIComponent leaves
 * only the pattern's characters, and '.' and '..' are refused since URL resolution would drop them
 * as path segments), `{ error }` with the reason for a hash that names no valid study, or null for
 * any other hash (the studies list).
 */
export function studyFromHash(hash) {
  const match = /^#\/studies\/(.*)$/s.exec(hash);
  if (!match) return null;
  let id;
  try {
    id = decodeURIComponent(match[1]);
  } catch {
    return { error: 'The link names no valid study: its study id is not valid percent-encoding.' };
  }
  if (!ID.test(id) || id === '.' || id === '..') {
    return { error: 'The link names no valid study: a study id is 1 to 200 letters, digits and . _ : ~ - (and not "." or "..").' };
  }
  return { id };
}

/** `/v1/studies/<id>` plus `rest`, the id encoded (a checked id is left as is; the encoding is the second lock). */
export const studyPath = (id, rest = '') => `/v1/studies/${encodeURIComponent(id)}${rest}`;
