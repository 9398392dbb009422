import { describe, expect, it } from 'vitest';
import { Id } from '../../protocols/messages.ts';
// The page's own module (plain ES module, no build step): what the browser runs is what is tested.
// @ts-expect-error: a plain .js file without types
import { studyFromHash, studyPath } from '../../coordinator/dashboard/static/study-id.js';

describe("the dashboard's study id from the page's hash", () => {
  it('accepts the ids the API accepts and builds encoded paths', () => {
    for (const id of ['s1', 'study_2026-01.a:b~c', 'x'.repeat(200)]) {
      expect(Id.safeParse(id).success).toBe(true);
      expect(studyFromHash(`#/studies/${encodeURIComponent(id)}`)).toEqual({ id });
      expect(studyPath(id, '/privacy')).not.toMatch(/\.\.\/|\?|#/);
      expect(studyPath(id, '/privacy')).toBe(`/v1/studies/${encodeURIComponent(id)}/privacy`);
    }
    expect(studyFromHash('#/')).toBeNull();
    expect(studyFromHash('')).toBeNull();
  });

  it('refuses ids that would leave /v1/studies/<id>, and malformed percent-encoding, with a message', () => {
    for (const hash of ['#/studies/..%2Fnodes%3F', '#/studies/..', '#/studies/.', '#/studies/a%2Fb', '#/studies/a/b', '#/studies/%', '#/studies/%E0%A4%A', '#/studies/', '#/studies/a%3Fx', '#/studies/a%23x', `#/studies/${'x'.repeat(201)}`]) {
      const result = studyFromHash(hash);
      expect(result, hash).toHaveProperty('error');
      expect(result.error).toMatch(/^The link names no valid study/);
    }
    expect(studyFromHash('#/studies/%').error).toMatch(/percent-encoding/);
  });
});
