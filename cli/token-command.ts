import { type Command, InvalidArgumentError } from 'commander';
import { addCoordinatorOptions, coordinatorClient, type CoordinatorOptions } from './api-client.ts';

/**
 * `fedmark token issue` / `fedmark token ls`: enrollment tokens for partners' nodes, and
 * `fedmark node ls`: the nodes a token may see. Each calls the coordinator's API
 * (coordinator/nodes/router.ts) with an operator's token.
 */
export function registerTokenCommands(program: Command): void {
  const token = program.commands.find((c) => c.name() === 'token') ?? program.command('token').description('enrollment tokens for partners\' nodes');
  registerTokenIssue(token);
  registerTokenList(token);
  registerNodeList(program);
}

/** The coordinator's answer to POST /v1/enrollment-tokens. */
interface IssuedToken {
  token: string;
  expiresAt: string;
  studyId: string;
  nodeName: string;
  region: string;
  jurisdiction?: string;
}

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };
/** The coordinator's longest token lifetime (protocols/messages.ts CreateEnrollmentToken). */
const MAX_EXPIRY_SECONDS = 30 * 86400;

/** `--expires-in`: seconds, or a number with s, m, h or d (`90m`, `2d`), at most 30 days. */
export function parseExpiresIn(raw: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(raw.trim());
  const seconds = m ? Number(m[1]) * UNIT_SECONDS[m[2] || 's'] : NaN;
  if (!Number.isSafeInteger(seconds) || seconds <= 0 || seconds > MAX_EXPIRY_SECONDS) {
    throw new InvalidArgumentError(`--expires-in must be a positive duration of at most 30d, as seconds or with s, m, h or d (e.g. 3600, 90m, 2d), got "${raw}"`);
  }
  return seconds;
}

/** A word the shell reads as itself: quoted when it holds anything but safe characters. */
const shellWord = (s: string) => (/^[A-Za-z0-9_./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/** The command line a partner runs with the token (their data path and state folder are theirs to choose). */
export function nodeCommandLine(coordinator: string, issued: IssuedToken): string {
  const args = ['fedmark', 'node', '--coordinator', coordinator, '--token', issued.token];
  if (issued.jurisdiction) args.push('--jurisdiction', issued.jurisdiction);
  // One state folder per enrollment: a folder keeps the node's identity and credentials.
  args.push('--state-dir', `.fedmark/node-${issued.nodeName.replace(/[^A-Za-z0-9_.-]/g, '_')}`, '--data', 'PATH/TO/DATA.csv');
  return args.map(shellWord).join(' ');
}

function registerTokenIssue(token: Command) {
  const cmd = token
    .command('issue')
    .description("issue a one-time enrollment token for a partner's node and print the command line the partner runs (admin token)")
    .requiredOption('--study <id>', 'study the node joins')
    .requiredOption('--node-name <name>', "the node's name in the study (unique in it)")
    .requiredOption('--region <region>', 'region the node belongs to (analysts of that region see it)')
    .requiredOption('--jurisdiction <name>', "the law the node's data falls under (a policy profile on the coordinator: EU-GDPR, US-CA-CCPA, CN-PIPL, ...); binding on the node")
    .option('--expires-in <duration>', 'how long the token is valid: seconds, or with s, m, h or d (default 1h, at most 30d)', parseExpiresIn);
  addCoordinatorOptions(cmd).action(async (opts: CoordinatorOptions & { study: string; nodeName: string; region: string; jurisdiction: string; expiresIn?: number }) => {
    const api = coordinatorClient(opts);
    const issued = await api.post<IssuedToken>('/v1/enrollment-tokens', {
      studyId: opts.study,
      nodeName: opts.nodeName,
      region: opts.region,
      jurisdiction: opts.jurisdiction,
      ...(opts.expiresIn !== undefined ? { expiresInSeconds: opts.expiresIn } : {}),
    });
    const command = nodeCommandLine(api.url, issued);
    if (opts.json) {
      process.stdout.write(JSON.stringify({ ...issued, command }) + '\n');
      return;
    }
    process.stdout.write(
      `${issued.token}\n\n` +
        `Enrollment token for node "${issued.nodeName}" (region ${issued.region}, jurisdiction ${issued.jurisdiction ?? 'none'}) in study ${issued.studyId}; usable once, until ${issued.expiresAt}.\n` +
        `The partner runs, next to their data:\n\n  ${command}\n`,
    );
  });
}

interface TokenRow {
  tokenHashPrefix: string;
  studyId: string;
  nodeName: string;
  region: string;
  jurisdiction: string | null;
  status: string;
  expiresAt: string;
  usedAt: string | null;
  nodeId: string | null;
}

function registerTokenList(token: Command) {
  const cmd = token
    .command('ls')
    .description('list enrollment tokens: unused, used (by which node) or expired; never the token itself (admin or auditor token)')
    .option('--study <id>', 'only this study\'s tokens');
  addCoordinatorOptions(cmd).action(async (opts: CoordinatorOptions & { study?: string }) => {
    const { tokens } = await coordinatorClient(opts).get<{ tokens: TokenRow[] }>(`/v1/enrollment-tokens${opts.study ? `?study=${encodeURIComponent(opts.study)}` : ''}`);
    if (opts.json) {
      process.stdout.write(JSON.stringify({ tokens }) + '\n');
      return;
    }
    const rows = tokens.map((t) => [t.tokenHashPrefix, t.studyId, t.nodeName, t.region, t.jurisdiction ?? '-', t.status, t.status === 'used' ? `${t.usedAt} by ${t.nodeId}` : `expires ${t.expiresAt}`]);
    process.stdout.write(table(['HASH', 'STUDY', 'NODE', 'REGION', 'JURISDICTION', 'STATUS', 'WHEN'], rows));
  });
}

interface NodeRow {
  id: string;
  studyId: string;
  name: string;
  region: string;
  jurisdiction: string | null;
  state: string;
  message: string | null;
  lastSeenAt: string | null;
  rounds: number;
}

/** `fedmark node ls`, under the `node` command (which runs a node when given no subcommand). */
function registerNodeList(program: Command) {
  const node = program.commands.find((c) => c.name() === 'node') ?? program.command('node');
  // `node` has its own --coordinator and --token (the enrollment token): without positional
  // options (on `fedmark`, which has no options of its own, and on `node`), it would take
  // `ls`'s --token (an API token) as its own.
  program.enablePositionalOptions();
  node.enablePositionalOptions();
  const cmd = node
    .command('ls')
    .description("list nodes: name, region, jurisdiction, state, last seen, rounds taken part in (admin and auditor: all; analyst: its region's)")
    .option('--study <id>', 'only this study\'s nodes (default: every node the token may see)');
  addCoordinatorOptions(cmd).action(async (opts: CoordinatorOptions & { study?: string }) => {
    const { nodes } = await coordinatorClient(opts).get<{ nodes: NodeRow[] }>(`/v1/nodes${opts.study ? `?study=${encodeURIComponent(opts.study)}` : ''}`);
    if (opts.json) {
      process.stdout.write(JSON.stringify({ nodes }) + '\n');
      return;
    }
    const rows = nodes.map((n) => [...(opts.study ? [] : [n.studyId]), n.name, n.region, n.jurisdiction ?? '-', n.state, n.lastSeenAt ?? 'never', String(n.rounds)]);
    process.stdout.write(table([...(opts.study ? [] : ['STUDY']), 'NAME', 'REGION', 'JURISDICTION', 'STATE', 'LAST SEEN', 'ROUNDS'], rows));
  });
}

/** Columns padded to their widest cell; "(none)" for an empty list. */
function table(header: string[], rows: string[][]): string {
  if (rows.length === 0) return '(none)\n';
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n') + '\n';
}
