import { describe, expect, it } from 'vitest';
import { BoundedCache, MAX_CACHED_MODEL_BYTES, MAX_CACHED_MODELS, MIN_CACHED_MODELS } from '../../coordinator/studies/study-service.ts';

// The study service's model caches (issue 13): bounded by bytes as well as by count, so 1M-parameter
// models cannot pile up across rounds (at 64 MB a cache they still grew for 16 rounds of the
// 100 x 1M simulation); the two newest versions, the ones a round serves, stay whatever their size.
describe('the published-model cache', () => {
  const MB = 1024 * 1024;

  it('holds four versions of a 1M-parameter model (4 MB each), evicting the oldest first', () => {
    const cache = new BoundedCache<string>();
    for (let v = 0; v < 40; v++) cache.set(`s/${v}`, `model ${v}`, 4 * MB);
    const kept = Array.from({ length: 40 }, (_, v) => cache.get(`s/${v}`)).filter((x) => x !== undefined);
    expect(MAX_CACHED_MODEL_BYTES).toBe(16 * MB);
    expect(kept).toEqual(['model 36', 'model 37', 'model 38', 'model 39']);
  });

  it('a size told after the read resolved counts too', () => {
    const cache = new BoundedCache<object>();
    const reads = Array.from({ length: 20 }, () => ({}));
    reads.forEach((r, v) => cache.set(`s/${v}`, r));
    reads.forEach((r, v) => cache.sized(`s/${v}`, r, 4 * MB));
    expect(reads.filter((_, v) => cache.get(`s/${v}`) !== undefined).length).toBe(MAX_CACHED_MODEL_BYTES / (4 * MB));
  });

  it('the newest MIN_CACHED_MODELS entries stay whatever their size', () => {
    expect(MIN_CACHED_MODELS).toBe(2);
    const cache = new BoundedCache<string>();
    cache.set('s/0', 'small', 1000);
    cache.set('s/1', 'big 1', 2 * MAX_CACHED_MODEL_BYTES);
    cache.set('s/2', 'big 2', 2 * MAX_CACHED_MODEL_BYTES);
    expect([cache.get('s/0'), cache.get('s/1'), cache.get('s/2')]).toEqual([undefined, 'big 1', 'big 2']);
    cache.set('s/3', 'big 3', 2 * MAX_CACHED_MODEL_BYTES);
    expect([cache.get('s/1'), cache.get('s/2'), cache.get('s/3')]).toEqual([undefined, 'big 2', 'big 3']);
  });

  it('small models are bounded by count', () => {
    const cache = new BoundedCache<number>();
    for (let v = 0; v < 100; v++) cache.set(`s/${v}`, v, 1000);
    expect(Array.from({ length: 100 }, (_, v) => cache.get(`s/${v}`)).filter((x) => x !== undefined).length).toBe(MAX_CACHED_MODELS);
  });
});
