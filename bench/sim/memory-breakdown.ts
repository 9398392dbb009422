import { readFileSync } from 'node:fs';
import { SIM_ADMIN_TOKEN } from './coordinator-process.ts';

/**
 * Where a coordinator's resident memory is, to tell a leak from a pool that only grows.
 * From /proc/PID/smaps: PGlite's WebAssembly linear memory is one anonymous mapping reserved
 * far larger than it uses (V8 reserves GiBs with guard pages for a wasm memory) and counted as
 * wasm (see below); `[heap]` is glibc's main arena (brk);
 * the other anonymous mappings are V8's heap pages, malloc's mmapped blocks and arenas.
 * From the coordinator's /metrics (prom-client defaults): V8 heap used/total and external.
 */
export interface MemoryBreakdown {
  rssMb: number;
  wasmRssMb: number;
  brkHeapRssMb: number;
  otherAnonRssMb: number;
  fileRssMb: number;
  v8HeapUsedMb: number | null;
  v8HeapTotalMb: number | null;
  externalMb: number | null;
}

const WASM_RUN_KB = 1024 * 1024;

export function smapsBreakdown(pid: number): Omit<MemoryBreakdown, 'v8HeapUsedMb' | 'v8HeapTotalMb' | 'externalMb'> | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return undefined;
  }
  const out = { rssMb: 0, wasmRssMb: 0, brkHeapRssMb: 0, otherAnonRssMb: 0, fileRssMb: 0 };
  // A mapping starts with "start-end perms offset dev inode [path]". A wasm memory's used part is
  // an rw-p mapping next to its PROT_NONE reservation, so anonymous mappings are grouped into runs
  // of adjacent ones and a run reserving >= 1 GiB counts as WebAssembly (measured with PGlite:
  // runs of 2-10 GiB; V8 heap pages and malloc's blocks are mapped in pieces of at most ~32 MB).
  let run = { end: -1, sizeKb: 0, rssMb: 0 };
  const closeRun = () => {
    if (run.sizeKb >= WASM_RUN_KB) out.wasmRssMb += run.rssMb;
    else out.otherAnonRssMb += run.rssMb;
  };
  for (const block of text.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
    const header = block.slice(0, block.indexOf('\n'));
    const [range, , , , , ...rest] = header.split(/\s+/);
    const path = rest.join(' ');
    const [start, end] = range.split('-').map((h) => parseInt(h, 16));
    const kb = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(block)?.[1] ?? 0);
    const rss = kb('Rss') / 1024;
    out.rssMb += rss;
    if (path === '[heap]') out.brkHeapRssMb += rss;
    else if (path === '' || path.startsWith('[anon')) {
      if (start !== run.end) {
        closeRun();
        run = { end: -1, sizeKb: 0, rssMb: 0 };
      }
      run = { end, sizeKb: run.sizeKb + kb('Size'), rssMb: run.rssMb + rss };
    } else out.fileRssMb += rss;
  }
  closeRun();
  return out;
}

/** prom-client's nodejs_heap_size_used_bytes, nodejs_heap_size_total_bytes, nodejs_external_memory_bytes. */
export async function v8Metrics(url: string): Promise<Pick<MemoryBreakdown, 'v8HeapUsedMb' | 'v8HeapTotalMb' | 'externalMb'>> {
  const none = { v8HeapUsedMb: null, v8HeapTotalMb: null, externalMb: null };
  try {
    const res = await fetch(new URL('/metrics', url), { headers: { authorization: `Bearer ${SIM_ADMIN_TOKEN}` } });
    if (!res.ok) return none;
    const text = await res.text();
    const mb = (name: string) => {
      const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)`, 'm').exec(text);
      return m ? Number(m[1]) / (1024 * 1024) : null;
    };
    return { v8HeapUsedMb: mb('nodejs_heap_size_used_bytes'), v8HeapTotalMb: mb('nodejs_heap_size_total_bytes'), externalMb: mb('nodejs_external_memory_bytes') };
  } catch {
    return none;
  }
}

export async function memoryBreakdown(pid: number, url: string): Promise<MemoryBreakdown | undefined> {
  const v8 = await v8Metrics(url);
  const maps = smapsBreakdown(pid);
  return maps && { ...maps, ...v8 };
}
