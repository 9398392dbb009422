import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';

/**
 * The lines a demo waits for in a child's log file, read back from the file.
 *
 * The children write their logs to the file themselves (their stdout and stderr are the file:
 * `stdio: ['pipe', fd, fd]`). Before, every line went through a pipe to the demo process, which
 * split it, parsed it as JSON and wrote it to the file again: ~10% of a core through the demo's
 * rounds (issue 13: ~15 ms of CPU a round, on a 2-core machine whose round is CPU-bound, and every
 * pipe write woke the demo process). Now the file is read only for lines a caller is waiting for
 * ('coordinator listening' at start-up, polled while waited for) and once more when the child
 * exits ('process resources'); only lines containing a caller's marker are parsed.
 */
export interface ChildLog {
  /** Calls `watch` with every JSON line containing `marker` read from now on. */
  onLine(marker: string, watch: (line: Record<string, unknown>) => void): () => void;
  /** Resolves with the first `match` of a JSON line containing `marker` (the file is polled meanwhile). */
  waitFor<T>(marker: string, match: (line: Record<string, unknown>) => T | undefined, onTimeout: () => Error, timeoutMs: number): Promise<T>;
  /** Reads what the child wrote since the last read, its last line too, and ends the waits (call when it has exited). */
  drain(): void;
}

/** How often the file is read while a caller waits for a line (start-up only). */
const POLL_MS = 20;
/** Bytes read at a time. */
const CHUNK = 1 << 20;
/** Longer lines are dropped unread (a log line of the demo's children is at most a few KB). */
const MAX_LINE = 1 << 20;

export function childLog(path: string): ChildLog {
  let position = 0;
  let carry = '';
  const decoder = new StringDecoder('utf8');
  const watchers = new Set<{ marker: string; watch: (line: Record<string, unknown>) => void }>();
  const waiting = new Set<() => void>();

  function dispatch(text: string, final: boolean): void {
    const parts = (carry + text).split('\n');
    carry = final ? '' : parts.pop()!;
    // A line this long is no line anyone waits for: not kept (nor split again at every read).
    if (carry.length > MAX_LINE) carry = '';
    for (const line of parts) {
      const interested = [...watchers].filter((w) => line.includes(w.marker));
      if (interested.length === 0) continue;
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue; // not a JSON line (a stack trace on stderr)
      }
      for (const w of interested) w.watch(parsed);
    }
  }

  function readNew(final = false): void {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      return; // not created yet
    }
    try {
      // In chunks: a long log read at exit takes one chunk's memory at a time, never its size.
      const end = fstatSync(fd).size;
      const chunk = Buffer.alloc(Math.min(CHUNK, Math.max(0, end - position)));
      while (position < end) {
        const read = readSync(fd, chunk, 0, Math.min(chunk.length, end - position), position);
        if (read <= 0) break;
        position += read;
        dispatch(decoder.write(chunk.subarray(0, read)), false);
      }
    } finally {
      closeSync(fd);
    }
    if (final) {
      dispatch(decoder.end(), true);
      for (const stop of waiting) stop(); // nothing more will come: the waits end (their caller hears of the exit)
    }
  }

  return {
    onLine(marker, watch) {
      const w = { marker, watch };
      watchers.add(w);
      return () => watchers.delete(w);
    },
    waitFor(marker, match, onTimeout, timeoutMs) {
      return new Promise((resolve, reject) => {
        const off = this.onLine(marker, (line) => {
          const v = match(line);
          if (v === undefined) return;
          stop();
          resolve(v);
        });
        const poll = setInterval(() => readNew(), POLL_MS);
        const timer = setTimeout(() => {
          stop();
          reject(onTimeout());
        }, timeoutMs);
        function stop() {
          off();
          clearInterval(poll);
          clearTimeout(timer);
          waiting.delete(stop);
        }
        waiting.add(stop);
        readNew();
      });
    },
    drain: () => readNew(true),
  };
}
