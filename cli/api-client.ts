import { type Command, Option } from 'commander';

/**
 * The operator commands' one way to reach a coordinator: `--coordinator` / FEDMARK_COORDINATOR and
 * `--token` / FEDMARK_TOKEN on every command, and an error that says what the coordinator refused
 * (its code, message and field), never a stack trace.
 *
 * @example
 *   addCoordinatorOptions(cmd).action(async (opts) => {
 *     const api = coordinatorClient(opts);
 *     const studies = await api.get<StudyView[]>('/v1/studies');
 *   });
 */
export interface CoordinatorOptions {
  coordinator?: string;
  token?: string;
  json?: boolean;
}

/** Adds --coordinator, --token and --json (environment defaults resolved at parse time, so --help shows them). */
export function addCoordinatorOptions(cmd: Command, opts: { json?: boolean } = {}): Command {
  cmd
    .addOption(new Option('--coordinator <url>', 'coordinator URL').env('FEDMARK_COORDINATOR'))
    .addOption(new Option('--token <token>', 'API token (admin, auditor, analyst or node, as the command needs)').env('FEDMARK_TOKEN'));
  if (opts.json !== false) cmd.option('--json', 'print JSON on stdout instead of text');
  return cmd;
}

/** A refusal from the coordinator: its HTTP status and error code, with the field it names. */
export class CoordinatorRefusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'CoordinatorRefusal';
  }
}

export interface CoordinatorClient {
  readonly url: string;
  get<T>(path: string, init?: { signal?: AbortSignal }): Promise<T>;
  post<T>(path: string, body?: unknown, init?: { signal?: AbortSignal }): Promise<T>;
  /** The raw response (for binary bodies such as a model file). Refusals still throw. */
  raw(path: string, init?: RequestInit): Promise<Response>;
}

export function coordinatorClient(opts: CoordinatorOptions): CoordinatorClient {
  if (!opts.coordinator) throw new Error('no coordinator: give --coordinator URL or set FEDMARK_COORDINATOR');
  if (!opts.token) throw new Error('no token: give --token TOKEN or set FEDMARK_TOKEN');
  const url = opts.coordinator.replace(/\/+$/, '');
  const token = opts.token;

  async function raw(path: string, init: RequestInit = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(url + path, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers ?? {}) } });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(`cannot reach the coordinator at ${url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
    }
    if (!res.ok) {
      const body = (await res.json().catch(() => null)) as { error?: { code?: string; message?: string; field?: string } } | null;
      const e = body?.error;
      throw new CoordinatorRefusal(res.status, e?.code ?? `HTTP_${res.status}`, `${init.method ?? 'GET'} ${path}: ${res.status} ${e?.code ?? ''} ${e?.message ?? res.statusText}`.replace(/\s+/g, ' ').trim(), e?.field);
    }
    return res;
  }

  return {
    url,
    raw,
    async get<T>(path: string, init: { signal?: AbortSignal } = {}) {
      return (await (await raw(path, { signal: init.signal })).json()) as T;
    },
    async post<T>(path: string, body?: unknown, init: { signal?: AbortSignal } = {}) {
      const res = await raw(path, { method: 'POST', signal: init.signal, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });
      const text = await res.text();
      return (text ? JSON.parse(text) : undefined) as T;
    },
  };
}
