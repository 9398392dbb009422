import { describe, expect, it } from 'vitest';
import { COORDINATOR_SEMI_SPACE_MB, coordinatorMemoryEnv } from '../../cli/process-resources.ts';

// Issue 13 (coordinator peak RSS): the demo and the scale bench start their coordinator with two
// malloc arenas, mmap over 256 KB and 8 MB V8 semi-spaces; a setting of the caller's own wins.
describe('the coordinator child memory environment', () => {
  it('sets the malloc settings and smaller semi-spaces by default', () => {
    expect(coordinatorMemoryEnv({})).toEqual({ MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '262144', NODE_OPTIONS: '--max-semi-space-size=8' });
    expect(COORDINATOR_SEMI_SPACE_MB).toBe(8);
  });

  it('keeps the caller’s NODE_OPTIONS and its own values', () => {
    expect(coordinatorMemoryEnv({ NODE_OPTIONS: '--enable-source-maps', MALLOC_ARENA_MAX: '4' })).toEqual({ MALLOC_ARENA_MAX: '4', MALLOC_MMAP_THRESHOLD_: '262144', NODE_OPTIONS: '--max-semi-space-size=8 --enable-source-maps' });
    expect(coordinatorMemoryEnv({ NODE_OPTIONS: '--max-semi-space-size=32' }).NODE_OPTIONS).toBe('--max-semi-space-size=32');
  });
});
