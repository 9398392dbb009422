import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/fedmark.js', import.meta.url));

export interface RunningProcess {
  child: ChildProcess;
  /** Every stdout line parsed as JSON (pino logs), in order. */
  logs: Array<Record<string, unknown>>;
  stderr: string[];
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

/** Runs `fedmark <args>` as a real OS process, collecting its JSON log lines. */
export function runFedmark(args: string[], env: Record<string, string | undefined> = {}): RunningProcess {
  // Test nodes run under CCPA unless a test says otherwise (a node refuses to start without a jurisdiction).
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, FEDMARK_LOG_LEVEL: 'info', FEDMARK_NODE_KEY_PASSPHRASE: 'test-node-passphrase-123', FEDMARK_KEY_PASSPHRASE: 'test-coordinator-passphrase-123', FEDMARK_NODE_JURISDICTION: 'US-CA-CCPA', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  const stderr: string[] = [];
  const waiters = new Set<() => void>();
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      logs.push(JSON.parse(line));
    } catch {
      logs.push({ raw: line });
    }
    for (const w of [...waiters]) w();
  });
  createInterface({ input: child.stderr! }).on('line', (line) => stderr.push(line));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    logs,
    stderr,
    exited,
    waitForLog(match, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = logs.find(match);
          if (found) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for a log line from fedmark ${args[0]}; stderr: ${stderr.join('\n')}`));
        }, timeoutMs);
        waiters.add(check);
        void exited.then((code) => {
          if (waiters.has(check)) {
            waiters.delete(check);
            clearTimeout(timer);
            reject(new Error(`fedmark ${args[0]} exited (${code}) first; stderr: ${stderr.join('\n')}`));
          }
        });
        check();
      });
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}
