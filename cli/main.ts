import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import pino from 'pino';
import { loadCoordinatorConfig } from '../coordinator/config.ts';
import { describeNodeConfigError, NODE_EXIT_CODES_HELP, NodeConfig } from '../client-node/config.ts';
import { registerPrivacyCommands } from './privacy-command.ts';
import { registerAuditCommands } from './audit-command.ts';
import { registerPrivacyReportCommand } from './privacy-report-command.ts';
import { registerStudyCommands } from './study-command.ts';
import { registerTokenCommands } from './token-command.ts';
import { delimiterOption, registerSpecCommands } from './spec-command.ts';
import { registerModelCommands } from './model-command.ts';
import { registerRecommendCommand } from './recommend-command.ts';
import { registerForecastCommand } from './forecast-command.ts';
import { STRATEGY_NAMES, StrategyConfig, type StrategyName } from '../protocols/strategies/config.ts';
import { ATTACK_NAMES, type AttackName } from '../client-node/attack.ts';
import { ATTACK_CONFIGURATIONS, ATTACK_DEMO_ROUNDS, DEADLINE_FACTOR, demoDeadlines, MIN_DEADLINE_SECONDS, type AttackConfiguration } from './attack-plans.ts';
import type { AttackDemoOptions } from './attack-demo.ts';
import { reportResourcesAtExit, resourceLogFields } from './process-resources.ts';
import { compileRoundCodeEagerly, optimizeCoordinatorCodeWithoutInlining, optimizeOnlyHotNodeCode } from './v8-tuning.ts';

type StrategyConfigInput = import('zod').input<typeof StrategyConfig>;

/** `fedmark`: one CLI for the demo, the coordinator, a node and the privacy accountant. */
/** Option parsers: a bad value is refused at once, naming the flag (commander exits with code 1). */
const numberParser = (flag: string, ok: (v: number) => boolean, what: string) => (raw: string) => {
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v) || !ok(v)) throw new InvalidArgumentError(`${flag} must be ${what}, got "${raw}"`);
  return v;
};
const positiveInt = (flag: string) => numberParser(flag, (v) => Number.isInteger(v) && v > 0, 'a positive integer');
const nonNegativeInt = (flag: string) => numberParser(flag, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer');
const positiveNumber = (flag: string) => numberParser(flag, (v) => v > 0, 'a positive number');
const probability = (flag: string) => numberParser(flag, (v) => v > 0 && v < 1, 'in (0, 1)');
const nonNegativeNumber = (flag: string) => numberParser(flag, (v) => v >= 0, 'a non-negative number');
const unitInterval = (flag: string) => numberParser(flag, (v) => v >= 0 && v < 1, 'in [0, 1)');
/** A PostgreSQL connection string (what `pg` accepts: postgres:// or postgresql://). */
const postgresUrl = (flag: string) => (value: string) => {
  if (!/^postgres(ql)?:\/\/./.test(value)) throw new InvalidArgumentError(`${flag} must be a PostgreSQL connection string (postgres://user@host:5432/database), got "${value}"`);
  return value;
};

/** The regression loss the demo uses unless --loss says otherwise (cli/demo.ts's DEFAULT_REGRESSION_LOSS, restated here so --help does not load the demo). */
export const DEFAULT_REGRESSION_LOSS = 'tweedie';

/**
 * The demo's strategy flags: each sets one parameter of the strategies listed, under its config
 * name (protocols/strategies/config.ts). A flag the chosen --strategy does not take is an error.
 */
interface StrategyFlag {
  flag: string;
  /** commander's camelCase key of the flag. */
  option: string;
  value: string;
  param: string;
  strategies: StrategyName[];
  what: string;
  parse: (flag: string) => (raw: string) => number;
}
export const STRATEGY_FLAGS: readonly StrategyFlag[] = [
  { flag: '--mu', option: 'mu', value: 'mu', param: 'mu', strategies: ['fedprox'], what: "FedProx's proximal coefficient mu, >= 0", parse: nonNegativeNumber },
  { flag: '--server-lr', option: 'serverLr', value: 'eta', param: 'serverLearningRate', strategies: ['fedavgm', 'fedadam', 'fedyogi', 'fedadagrad'], what: 'server learning rate eta', parse: positiveNumber },
  { flag: '--momentum', option: 'momentum', value: 'beta', param: 'momentum', strategies: ['fedavgm'], what: 'server momentum, in [0, 1)', parse: unitInterval },
  { flag: '--beta1', option: 'beta1', value: 'b1', param: 'beta1', strategies: ['fedadam', 'fedyogi'], what: 'first-moment decay, in [0, 1)', parse: unitInterval },
  { flag: '--beta2', option: 'beta2', value: 'b2', param: 'beta2', strategies: ['fedadam', 'fedyogi'], what: 'second-moment decay, in [0, 1)', parse: unitInterval },
  { flag: '--tau', option: 'tau', value: 'tau', param: 'tau', strategies: ['fedadam', 'fedyogi', 'fedadagrad'], what: 'adaptivity tau, > 0', parse: positiveNumber },
  { flag: '--trim-fraction', option: 'trimFraction', value: 'f', param: 'trimFraction', strategies: ['trimmed-mean'], what: 'fraction trimmed at each end of every coordinate, in [0, 0.5)', parse: (flag) => numberParser(flag, (v) => v >= 0 && v < 0.5, 'in [0, 0.5)') },
  { flag: '--byzantine', option: 'byzantine', value: 'f', param: 'byzantine', strategies: ['krum'], what: "Byzantine nodes tolerated f (Krum needs more than 2f + 2 nodes a round)", parse: nonNegativeInt },
  { flag: '--select', option: 'select', value: 'm', param: 'select', strategies: ['krum'], what: 'best-scored updates Multi-Krum averages (1: Krum)', parse: positiveInt },
];

function strategyFlagHelp(flag: StrategyFlag): string {
  const defaults = flag.strategies.map((name) => [name, (StrategyConfig.parse({ name }) as Record<string, unknown>)[flag.param]] as const);
  const same = defaults.every(([, d]) => d === defaults[0][1]);
  const list = same ? `${flag.strategies.join(', ')} (default ${defaults[0][1]})` : defaults.map(([name, d]) => `${name} (default ${d})`).join(', ');
  return `${flag.what}: ${list}`;
}

/** The study's `strategy` from the demo's flags; a parameter the strategy does not take is an error naming it. */
export function strategyFromFlags(opts: Record<string, unknown>): StrategyConfigInput {
  const name = (opts.strategy as StrategyName | undefined) ?? 'fedavg';
  const config: Record<string, unknown> = { name };
  for (const flag of STRATEGY_FLAGS) {
    if (opts[flag.option] === undefined) continue;
    if (!flag.strategies.includes(name)) {
      throw new InvalidArgumentError(`${flag.flag} does not apply to --strategy ${name}: it is a parameter of ${flag.strategies.join(', ')}${opts.strategy === undefined ? ' (give --strategy)' : ''}`);
    }
    config[flag.param] = opts[flag.option];
  }
  const parsed = StrategyConfig.safeParse(config);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const flag = STRATEGY_FLAGS.find((f) => f.param === issue.path[0]);
    throw new InvalidArgumentError(`${flag ? flag.flag : '--strategy'}: ${issue.message}`);
  }
  return config as StrategyConfigInput;
}

function configurationList(raw: string): AttackConfiguration[] {
  const list = raw.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = list.filter((c) => !(ATTACK_CONFIGURATIONS as readonly string[]).includes(c));
  if (list.length === 0 || unknown.length) throw new InvalidArgumentError(`--compare: expected a comma-separated list of ${ATTACK_CONFIGURATIONS.join(', ')}${unknown.length ? `, got ${unknown.join(', ')}` : ''}`);
  return list as AttackConfiguration[];
}

/** `demo --attack`: the comparison runs its own strategies (cli/attack-demo.ts), so strategy and DP flags do not apply. */
async function runAttackDemoFromFlags(opts: Record<string, unknown>): Promise<void> {
  const foreign = ['strategy', ...STRATEGY_FLAGS.map((f) => f.option), 'epsilon', 'dpSgd', 'task', 'loss', 'databaseUrl'].filter((k) => opts[k] !== undefined);
  if (foreign.length) {
    const flag = (k: string) => STRATEGY_FLAGS.find((f) => f.option === k)?.flag ?? `--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}`;
    throw new Error(`${foreign.map(flag).join(', ')} cannot go with --attack: the comparison runs each configuration of --compare (fedavg with and without claim bounds, median, trimmed mean, Krum) on the binary task without DP`);
  }
  const { runAttackDemo } = await import('./attack-demo.ts');
  const { attack, malicious, compare, roundDeadline, ...rest } = opts;
  await runAttackDemo({
    ...(rest as Omit<AttackDemoOptions, 'attack'>),
    attack: attack as AttackName,
    malicious: malicious as number | undefined,
    compare: compare as AttackConfiguration[] | undefined,
    ...(roundDeadline !== undefined ? { deadlines: demoDeadlines(roundDeadline as number) } : {}),
  });
}

export function buildProgram(): Command {
  const program = new Command('fedmark').description('Privacy-preserving federated modeling for marketing').showHelpAfterError();

  const demo = program
    .command('demo')
    .description('run a demo federation on this machine: a coordinator and one node process per region')
    .option('--data <file>', 'CSV to learn from (default: the shipped churn data; with --task regression, the shipped customer-value data)')
    .option('--target <column>', 'target column (default: churn, or spend_12m for regression, on the shipped data)')
    .addOption(new Option('--task <kind>', 'binary classification, regression of a numeric target, demand forecast of time series, or product recommendation from interactions (default binary)').choices(['binary', 'regression', 'forecast', 'recommend']))
    .option('--date <column>', 'forecast: the date column of the long-format CSV (daily or weekly)')
    .option('--series <column>', 'forecast: the series id column (store, product, store x product)')
    .option('--horizon <n>', 'forecast: periods held out at the end of every series and forecast', positiveInt('--horizon'))
    .option('--user <column>', 'recommend: the user column')
    .option('--item <column>', 'recommend: the item column')
    .option('--no-personalize', 'nodes do not fine-tune the final global model on their own rows (the "personalized" row of the final table)')
    .addOption(new Option('--loss <name>', `regression loss (default ${DEFAULT_REGRESSION_LOSS}, log link: made for spend-like targets, many zeros and a heavy right tail); regression only`).choices(['mse', 'huber', 'tweedie', 'log1p']))
    .option('--positive <value>', 'target value of the positive class (default: yes/1/true); binary only')
    .option('--partition-by <column>', 'split rows into regions by this column (default: state for the churn data, region for the customer-value data)')
    .option('--nodes <n>', "number of regions / nodes (default 10); with --partition-by, the column's values are grouped into n regions, one node per value when n is at least their number (--partition-by state --nodes 51)", positiveInt('--nodes'))
    .option('--dirichlet <alpha>', 'label-skewed split over --nodes nodes with Dirichlet(alpha), alpha > 0, instead of a column', positiveNumber('--dirichlet'))
    .option('--rounds <r>', 'federated rounds (default 20)', positiveInt('--rounds'))
    .addOption(new Option('--model <kind>', 'model (default mlp 32-16); logreg and linear are the same one-layer model, for either task').choices(['logreg', 'linear', 'mlp']))
    .option('--local-epochs <n>', 'local epochs per round (default 1)', positiveInt('--local-epochs'))
    .addOption(new Option('--strategy <name>', 'how the coordinator aggregates the updates (default fedavg); parameters below').choices([...STRATEGY_NAMES]));
  for (const flag of STRATEGY_FLAGS) demo.option(`${flag.flag} <${flag.value}>`, strategyFlagHelp(flag), flag.parse(flag.flag));
  demo
    .option('--out <dir>', 'output folder, deleted and rewritten by each run (default .fedmark/demo; must be new, empty or an earlier demo output)')
    .option('--exclude <columns>', 'comma-separated columns to leave out of the features')
    .addOption(delimiterOption())
    .option('--seed <n>', 'seed of the splits and the initial model (default 42)', nonNegativeInt('--seed'))
    .option('--no-local-baseline', 'skip training the local-only comparison models')
    .option('--database-url <url>', "run the demo's coordinator on this PostgreSQL database instead of the embedded PGlite (postgres://...; best a new, empty database: the demo writes its study, keys and audit log to it)", postgresUrl('--database-url'))
    .option('--json', 'end with one line of JSON on stdout (progress goes to stderr)')
    .option('--epsilon <e>', "central (client-level) DP: the study's total epsilon budget; noise is calibrated to it", positiveNumber('--epsilon'))
    .option('--delta <d>', 'delta of the DP guarantees (default 1e-5)', probability('--delta'))
    .option('--clip <c>', 'clip norm of node updates under central DP (default 0.5)', positiveNumber('--clip'))
    .option('--dp-sgd', 'record-level DP-SGD on every node')
    .option('--dp-sgd-epsilon <e>', 'target record-level epsilon of DP-SGD per node over the study (default 3)', positiveNumber('--dp-sgd-epsilon'))
    .addOption(new Option('--accountant <name>', 'privacy accountant (default rdp)').choices(['rdp', 'pld']))
    .addOption(new Option('--attack <name>', `run the first --malicious node(s) as attackers and compare the damage with and without defenses: one federation per configuration (${ATTACK_DEMO_ROUNDS} rounds each unless --rounds)`).choices([...ATTACK_NAMES]))
    .option('--malicious <n>', 'attacker nodes with --attack (default 1)', positiveInt('--malicious'))
    .option('--round-deadline <s>', `seconds nodes have to send their update, half of it to evaluate (default 120, more with many nodes; with --attack, ${DEADLINE_FACTOR} x the slowest round where nobody was refused, at least ${MIN_DEADLINE_SECONDS})`, positiveNumber('--round-deadline'))
    .option('--compare <configurations>', `with --attack: comma-separated, from ${ATTACK_CONFIGURATIONS.join(', ')} (default all)`, configurationList)
    .action(async (opts) => {
      if (opts.attack !== undefined) return runAttackDemoFromFlags(opts);
      if (opts.malicious !== undefined || opts.compare !== undefined) throw new Error('--malicious and --compare go with --attack NAME');
      const strategy = strategyFromFlags(opts);
      if (opts.loss !== undefined && opts.task !== 'regression') throw new Error(`--loss ${opts.loss} is a regression loss: add --task regression`);
      if (opts.positive !== undefined && opts.task === 'regression') throw new Error('--positive names the positive class of a binary target: a regression target has none');
      const { runDemo } = await import('./demo.ts');
      for (const flag of STRATEGY_FLAGS) delete opts[flag.option];
      const { roundDeadline, ...rest } = opts;
      await runDemo({ ...rest, strategy, ...(roundDeadline !== undefined ? { deadlines: demoDeadlines(roundDeadline) } : {}) });
    });

  program
    .command('coordinator')
    .description('run the coordinator (HTTP API; PGlite by default, PostgreSQL when DATABASE_URL is set)')
    .option('--host <host>', 'interface to listen on (env FEDMARK_HOST)')
    .option('--port <port>', 'port, 0 for any free one (env FEDMARK_PORT)')
    .option('--data-dir <dir>', 'embedded database folder (env FEDMARK_DATA_DIR)')
    .option('--database-url <url>', 'PostgreSQL URL (env DATABASE_URL)')
    .action(async (opts) => {
      const v8Flags = optimizeCoordinatorCodeWithoutInlining(); // first: everything the coordinator optimizes later (cli/v8-tuning.ts)
      const config = loadCoordinatorConfig(process.env, { host: opts.host, port: opts.port, dataDir: opts.dataDir, databaseUrl: opts.databaseUrl });
      const log = pino({ level: config.logLevel, mixin: resourceLogFields() });
      log.info({ v8Flags }, 'v8 tuning');
      reportResourcesAtExit(); // the demo's JSON reports the coordinator's peak RSS (cli/process-resources.ts)
      const { startCoordinator } = await import('../coordinator/main.ts');
      const running = await startCoordinator(config, log);
      const shutdown = async (signal: string) => {
        log.info({ signal }, 'shutting down');
        await running.close();
        process.exit(0);
      };
      process.once('SIGTERM', () => void shutdown('SIGTERM'));
      process.once('SIGINT', () => void shutdown('SIGINT'));
      exitWithParent(() => void shutdown('parent exited'));
    });

  program
    .command('node')
    .description('run a client node next to its data: enrolls, pulls tasks, trains locally, sends only model updates')
    // Not requiredOption: commander would then demand it of `fedmark node ls` too (checked in the action).
    .option('--coordinator <url>', 'coordinator URL (env FEDMARK_COORDINATOR); required', process.env.FEDMARK_COORDINATOR)
    .option('--token <token>', 'one-time enrollment token (first start only; env FEDMARK_ENROLLMENT_TOKEN)', process.env.FEDMARK_ENROLLMENT_TOKEN)
    .option('--data <source>', "this node's data: a CSV or Parquet file, or a PostgreSQL URL with --table or --query (env FEDMARK_NODE_DATA); required to run", process.env.FEDMARK_NODE_DATA)
    .option('--table <name>', 'with a PostgreSQL --data: the table (or SCHEMA.TABLE) to read, read-only (env FEDMARK_NODE_DATA_TABLE)', process.env.FEDMARK_NODE_DATA_TABLE)
    .option('--query <sql>', 'with a PostgreSQL --data: a SELECT to read, run in a READ ONLY transaction (env FEDMARK_NODE_DATA_QUERY)', process.env.FEDMARK_NODE_DATA_QUERY)
    .option('--batch-rows <n>', 'with a PostgreSQL --data: rows fetched per cursor batch (default 5000)', process.env.FEDMARK_NODE_DATA_BATCH_ROWS)
    .option('--refresh-seconds <s>', 'with a PostgreSQL --data: reread the rows at most this often (default 600)', process.env.FEDMARK_NODE_DATA_REFRESH_SECONDS)
    .option('--spec <file>', 'local copy of the study\'s feature spec (JSON) to check the study against')
    .option('--state-dir <dir>', 'where the node keeps its credentials', process.env.FEDMARK_NODE_STATE_DIR ?? '.fedmark/node')
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend (env FEDMARK_TF_BACKEND)').choices(['tensorflow', 'wasm', 'cpu']).default(process.env.FEDMARK_TF_BACKEND))
    .option('--daemon', 'keep running after the study completes')
    .option('--withdraw', 'withdraw this node from its study (for good) and exit')
    .option('--reason <text>', 'reason given with --withdraw')
    .option('--rotate-key', 'make a new key pair, register it with a request signed by the old key, and exit')
    .option('--max-epsilon <e>', 'this node\'s own ceiling on record-level epsilon for its data (env FEDMARK_NODE_MAX_EPSILON); implies DP-SGD only', process.env.FEDMARK_NODE_MAX_EPSILON)
    .option('--max-epsilon-delta <d>', 'delta of that ceiling (default 1e-5)')
    .option('--ledger-dir <dir>', 'privacy ledgers, one per data source, shared by every node on this machine (env FEDMARK_NODE_LEDGER_DIR; default ~/.fedmark/ledgers)', process.env.FEDMARK_NODE_LEDGER_DIR)
    .option('--key-passphrase-file <file>', 'file holding the passphrase of the node\'s private key (or env FEDMARK_NODE_KEY_PASSPHRASE)')
    .option('--jurisdiction <name>', 'the law this node\'s data falls under: EU-GDPR, US-CA-CCPA, CN-PIPL, ... (env FEDMARK_NODE_JURISDICTION)', process.env.FEDMARK_NODE_JURISDICTION)
    .option('--policy <file>', 'a local policy profile (JSON) instead of the built-in one for the jurisdiction')
    .addOption(delimiterOption())
    .option('--coordinator-key <file>', 'the coordinator\'s public key to pin at enrollment (otherwise trusted on first use)')
    .option('--personalize', "regional personalization: at the final round, fine-tune a copy of the global model on this node's data, keep it locally (path logged, never sent) and report global vs personalized metrics on its held-out rows")
    .option('--personalize-epochs <n>', 'local epochs of that fine-tuning (default 3; env FEDMARK_NODE_PERSONALIZE_EPOCHS)', process.env.FEDMARK_NODE_PERSONALIZE_EPOCHS)
    .option('--personalize-out <file>', 'where to keep the personalized weights (default <state-dir>/personalized/<study>-v<version>.fmw; env FEDMARK_NODE_PERSONALIZE_OUT)', process.env.FEDMARK_NODE_PERSONALIZE_OUT)
    .addOption(new Option('--attack <name>', 'FOR DEMOS AND TESTS ONLY: this node attacks the study after honest training (client-node/attack.ts)').choices([...ATTACK_NAMES]))
    .addHelpText('after', `\n${NODE_EXIT_CODES_HELP}`)
    .action(async (opts) => {
      // First: the config's zod parse below is round code too (cli/v8-tuning.ts).
      const v8Flags = [...compileRoundCodeEagerly(), ...optimizeOnlyHotNodeCode()];
      if (!opts.coordinator) program.error("error: required option '--coordinator <url>' not specified (or set FEDMARK_COORDINATOR)");
      const parsed = NodeConfig.safeParse({
        coordinator: opts.coordinator,
        token: opts.token,
        data: opts.data ?? (opts.withdraw || opts.rotateKey ? '-' : undefined),
        dataTable: opts.table,
        dataQuery: opts.query,
        dataBatchRows: opts.batchRows,
        dataRefreshSeconds: opts.refreshSeconds,
        spec: opts.spec,
        stateDir: opts.stateDir,
        backend: opts.backend || undefined,
        logLevel: process.env.FEDMARK_LOG_LEVEL,
        exitWhenDone: !opts.daemon,
        allowInsecureRemote: process.env.FEDMARK_ALLOW_INSECURE_REMOTE === '1',
        maxEpsilon: opts.maxEpsilon === undefined ? undefined : Number(opts.maxEpsilon),
        keyPassphrase: opts.keyPassphraseFile ? readFileSync(opts.keyPassphraseFile, 'utf8').trim() : process.env.FEDMARK_NODE_KEY_PASSPHRASE,
        keyPassphraseRandom: process.env.FEDMARK_NODE_KEY_PASSPHRASE_RANDOM === '1',
        coordinatorKey: opts.coordinatorKey,
        jurisdiction: opts.jurisdiction,
        policy: opts.policy,
        maxEpsilonDelta: opts.maxEpsilonDelta === undefined ? undefined : Number(opts.maxEpsilonDelta),
        ledgerDir: opts.ledgerDir, dataSourceId: process.env.FEDMARK_NODE_DATA_SOURCE_ID || undefined,
        attack: opts.attack,
        delimiter: opts.delimiter,
        personalize: opts.personalize === true,
        personalizeEpochs: opts.personalizeEpochs,
        personalizeOut: opts.personalizeOut,
      });
      if (!parsed.success) {
        program.error(`invalid node configuration: ${describeNodeConfigError(parsed.error)}`, { exitCode: 2 });
        return;
      }
      const log = pino({ level: parsed.data.logLevel, mixin: resourceLogFields() });
      log.info({ v8Flags }, 'v8 tuning');
      reportResourcesAtExit(); // the demo's JSON reports the nodes' peak RSS (cli/process-resources.ts)
      if (parsed.data.attack) log.warn({ attack: parsed.data.attack }, 'this node is an ATTACKER (--attack: for demos and tests only)');
      const { runNode, withdrawNode, rotateNodeKey } = await import('../client-node/node-runner.ts');
      if (opts.withdraw) return withdrawNode(Object.freeze(parsed.data), opts.reason, log);
      if (opts.rotateKey) {
        await rotateNodeKey(Object.freeze(parsed.data), log);
        return;
      }
      const abort = new AbortController();
      process.once('SIGTERM', () => abort.abort());
      process.once('SIGINT', () => abort.abort());
      exitWithParent(() => {
        abort.abort();
        // A node busy training notices the abort only between steps; its parent is gone either way.
        setTimeout(() => process.exit(1), 10_000).unref();
      });
      const summary = await runNode(Object.freeze(parsed.data), log, abort.signal);
      log.info(summary, 'node finished');
    });

  registerPrivacyCommands(program);
  registerPrivacyReportCommand(program);
  registerStudyCommands(program);
  registerTokenCommands(program);
  registerSpecCommands(program);
  registerModelCommands(program);
  registerRecommendCommand(program);
  registerForecastCommand(program);
  registerAuditCommands(program, {
    exportFromCoordinator: async (opts) => (await import('../coordinator/audit/audit-export-sources.ts')).exportFromCoordinator(opts),
    exportFromDatabase: async (opts) => (await import('../coordinator/audit/audit-export-sources.ts')).exportFromDatabase(opts),
  });
  return program;
}

/**
 * With FEDMARK_EXIT_WITH_PARENT=1 (set by the demo for its children), stdin is a pipe from the
 * parent: when it closes, the parent is gone (even after SIGKILL, which it cannot catch), and
 * this process shuts down instead of living on as an orphan holding a port and a database.
 */
function exitWithParent(stop: () => void): void {
  if (process.env.FEDMARK_EXIT_WITH_PARENT !== '1') return;
  let stopped = false;
  const once = () => {
    if (stopped) return;
    stopped = true;
    stop();
  };
  process.stdin.on('end', once).on('close', once).on('error', once);
  process.stdin.resume();
  // Watching must not keep the process alive: a node that finished its study exits as before.
  (process.stdin as unknown as { unref?: () => void }).unref?.();
}

export async function main(argv: string[]) {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    process.stderr.write(`fedmark: ${err instanceof Error ? err.message : String(err)}\n`);
    // A node that stops for a known reason says which by its exit code (NodeStoppedError, `fedmark node --help`).
    const code = (err as { exitCode?: unknown } | null)?.exitCode;
    process.exitCode = typeof code === 'number' && Number.isInteger(code) && code > 0 ? code : 1;
  }
}
