import { describe, expect, it } from 'vitest';
import { BoundedCache, MAX_CACHED_MODEL_BYTES, MAX_CACHED_MODELS } from '../../coordinator/studies/study-service.ts';

// The study service's model caches (issue 13): bounded by bytes as well as by count, so 1M-parameter
// models cannot pile up to ~512 MB across rounds.
describe('the published-model cache', () => {
  const MB = 1024 * 1024;

  it('keeps at most MAX_CACHED_MODEL_BYTES, evicting the oldest versions first', () => {
    const cache = new BoundedCache<string>();
    for (let v = 0; v < 40; v++) cache.set(`s/${v}`, `model ${v}`, 8 * MB);
    const kept = Array.from({ length: 40 }, (_, v) => cache.get(`s/${v}`)).filter((x) => x !== undefined);
    expect(kept.length).toBe(MAX_CACHED_MODEL_BYTES / (8 * MB));
    expect(cache.get('s/39')).toBe('model 39');
    expect(cache.get('s/0')).toBeUndefined();
  });

  it('a size told after the read resolved counts too; the newest entry stays whatever its size', () => {
    const cache = new BoundedCache<object>();
    const reads = Array.from({ length: 20 }, () => ({}));
    reads.forEach((r, v) => cache.set(`s/${v}`, r));
    reads.forEach((r, v) => cache.sized(`s/${v}`, r, 8 * MB));
    expect(reads.filter((_, v) => cache.get(`s/${v}`) !== undefined).length).toBe(MAX_CACHED_MODEL_BYTES / (8 * MB));
    cache.set('s/big', reads[0], 2 * MAX_CACHED_MODEL_BYTES);
    expect(cache.get('s/big')).toBe(reads[0]);
    expect(cache.get('s/19')).toBeUndefined();
  });

  it('small models are bounded by count', () => {
    const cache = new BoundedCache<number>();
    for (let v = 0; v < 100; v++) cache.set(`s/${v}`, v, 1000);
    expect(Array.from({ length: 100 }, (_, v) => cache.get(`s/${v}`)).filter((x) => x !== undefined).length).toBe(MAX_CACHED_MODELS);
  });
});
