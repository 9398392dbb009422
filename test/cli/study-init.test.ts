import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import YAML, { isMap, isPair, isScalar, type Pair } from 'yaml';
import { BIN } from '../helpers/processes.ts';
import { StudyConfig } from '../../protocols/messages.ts';
import { checkStudyAgainstPolicy, DEFAULT_POLICIES, privacyFacts } from '../../protocols/policy/jurisdiction-policy.ts';
import { planSpec } from '../../cli/spec-command.ts';
import { studyInitYaml } from '../../cli/study-init.ts';
import { readStudyFile } from '../../cli/study-command.ts';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'fedmark-study-init-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** 90 rows, semicolon-separated: an id, a religion, ages, a plan, a spend and a yes/no label. */
function writeData(name: string): string {
  const lines = ['customer_id;religion;age;plan;spend;churn'];
  for (let i = 0; i < 90; i++) lines.push([i + 1, ['a', 'b'][i % 2], 20 + ((i * 7) % 50), i % 4 ? 'pro' : 'basic', ((i * 37) % 100) + 0.25, i % 3 ? 'no' : 'yes'].join(';'));
  const path = join(dir, name);
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

/**
 * What StudyConfig itself fills in at `path` when the field is left out (or, for a discriminant
 * such as task.kind, its whole object): computed here independently of cli/study-init.ts.
 */
function schemaDefault(config: unknown, path: string[]): unknown {
  for (const cut of [path, path.slice(0, -1)]) {
    if (cut.length === 0) continue;
    const copy = structuredClone(config) as Record<string, unknown>;
    let parent: Record<string, unknown> = copy;
    for (const key of cut.slice(0, -1)) parent = parent[key] as Record<string, unknown>;
    delete parent[cut[cut.length - 1]];
    const parsed = StudyConfig.safeParse(copy);
    if (parsed.success) return path.reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], parsed.data);
  }
  return undefined;
}

/** Every key of the YAML with its path and the comment above it. */
function commentedKeys(text: string): Array<{ path: string[]; comment: string }> {
  const out: Array<{ path: string[]; comment: string }> = [];
  const walk = (node: unknown, path: string[]) => {
    if (!isMap(node)) return;
    (node.items as Pair[]).forEach((pair, i) => {
      if (!isPair(pair) || !isScalar(pair.key)) return;
      const p = [...path, String(pair.key.value)];
      // The parser hangs the comment above a nested map's first key on the map itself.
      out.push({ path: p, comment: pair.key.commentBefore ?? (i === 0 ? (node.commentBefore ?? '') : '') });
      if (p[0] !== 'features') walk(pair.value, p);
    });
  };
  walk(YAML.parseDocument(text).contents, []);
  return out;
}

/** Checks every `default:` comment against the schema; returns how many it checked. */
function checkDefaults(text: string): number {
  const config = YAML.parse(text);
  let checked = 0;
  for (const { path, comment } of commentedKeys(text)) {
    expect(comment, `no description above ${path.join('.')}`).not.toBe('');
    const line = comment.split('\n').find((l) => l.trim().startsWith('default: '));
    const expected = schemaDefault(config, path);
    if (line === undefined) {
      expect(expected, `${path.join('.')} has a default but no "default:" comment`).toBeUndefined();
      continue;
    }
    const written = JSON.parse(line.trim().slice('default: '.length).replace(/ \(.*\)$/, ''));
    expect(written, `default of ${path.join('.')}`).toEqual(expected);
    checked++;
  }
  return checked;
}

/** The YAML with every commented-out example field (`# key: value`) uncommented. */
function uncommentExamples(text: string, keys: string[]): string {
  return text.replace(new RegExp(`^(\\s*)# (${keys.join('|')}): `, 'gm'), '$1$2: ');
}

const OPTIONAL = ['release', 'minNodesToStart', 'consent', 'privacy', 'jurisdictions', 'idColumn'];

describe('fedmark study init (real process)', () => {
  it('writes YAML that yaml and StudyConfig.parse accept, complying with the planned jurisdiction, every comment default equal to the schema default', async () => {
    const data = writeData('people.csv');
    const { stdout, stderr } = await run(process.execPath, [BIN, 'study', 'init', '--data', data, '--target', 'churn', '--jurisdiction', 'EU-GDPR', '--name', 'churn-eu']);
    const config = StudyConfig.parse(YAML.parse(stdout));
    expect(config.name).toBe('churn-eu');
    expect(config.jurisdictions).toEqual(['EU-GDPR']);
    expect(config.model).toEqual({ kind: 'mlp', hidden: [32, 16] });
    // Left out: the id (an idColumn example instead) and religion (forbidden under GDPR).
    expect(config.features.features.map((f) => f.name)).toEqual(['age', 'plan', 'spend']);
    expect(stdout).toMatch(/^# left out "religion": .*forbidden under EU-GDPR v1/m);
    expect(stdout).toMatch(/^\s+# idColumn: customer_id$/m);
    expect(stdout).toMatch(/^#\s+EU-GDPR v1: at least 3 nodes per aggregate, central DP required/m);
    expect(stderr).toMatch(/left out "customer_id"/);
    // The study GDPR's profile would accept: 3 nodes, central DP within its epsilon limits.
    const gdpr = DEFAULT_POLICIES.find((p) => p.jurisdiction === 'EU-GDPR')!;
    expect(checkStudyAgainstPolicy(config, gdpr, privacyFacts(config))).toEqual([]);
    expect(config.minNodesPerRound).toBe(3);
    expect(stdout).toMatch(/# default: 2 \(set to 3 for the planned jurisdictions\)\nminNodesPerRound: 3/);

    expect(checkDefaults(stdout)).toBeGreaterThanOrEqual(20);
    // Every StudyConfig field is spelled out, as a key or as a commented example.
    const shape = (StudyConfig as unknown as { in: { shape: Record<string, unknown> } }).in.shape;
    for (const key of Object.keys(shape)) expect(stdout, key).toMatch(new RegExp(`^(# )?${key}:`, 'm'));
    const uncommented = YAML.parse(uncommentExamples(stdout, OPTIONAL));
    expect(uncommented.minNodesToStart).toBe(3);
    expect(uncommented.training.idColumn).toBe('customer_id');
    expect(() => StudyConfig.parse(uncommented)).not.toThrow();
  });

  it('names the flag or the cell on bad input, without a stack trace', async () => {
    const data = writeData('bad.csv');
    const e = await run(process.execPath, [BIN, 'study', 'init', '--data', data, '--target', 'spend', '--exclude', 'churn', '--task', 'regression', '--jurisdiction', 'CN-PIPL']).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => err,
    );
    expect(e.code).toBe(1);
    expect(e.stderr).toMatch(/--task regression cannot run under DP, which CN-PIPL requires/);
    expect(e.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('studyInitYaml', () => {
  it('without jurisdictions: defaults kept, optional fields as examples that parse once uncommented', () => {
    const yaml = studyInitYaml(planSpec({ data: writeData('plain.csv'), target: 'churn' }), { name: 'plain', model: 'logreg' });
    const config = StudyConfig.parse(YAML.parse(yaml));
    expect(config.privacy).toBeUndefined();
    expect(config.minNodesPerRound).toBe(2);
    expect(config.model).toEqual({ kind: 'logreg' });
    // Religion is flagged and kept, tagged with its category (no planned jurisdiction forbids it).
    expect(config.features.features.find((f) => f.name === 'religion')?.category).toBe('religion');
    expect(checkDefaults(yaml)).toBeGreaterThanOrEqual(18);
    // `fedmark study create --config` reads it (cli/study-command.ts, the same schema).
    const file = join(dir, 'plain.yaml');
    writeFileSync(file, yaml);
    expect(() => readStudyFile(file)).not.toThrow();
    const uncommented = StudyConfig.parse(YAML.parse(uncommentExamples(yaml, OPTIONAL)));
    expect(uncommented.privacy?.central?.noiseMultiplier).toBeGreaterThan(0);
    expect(uncommented.jurisdictions).toEqual(['EU-GDPR']);
  });

  it('regression with a linear model: the task\'s own defaults are spelled out and checked', () => {
    const yaml = studyInitYaml(planSpec({ data: writeData('reg.csv'), target: 'spend', task: 'regression', exclude: ['churn'] }), { name: 'reg', model: 'linear' });
    const config = StudyConfig.parse(YAML.parse(yaml));
    expect(config.task).toEqual({ kind: 'regression', loss: 'mse', huberDelta: 1, tweediePower: 1.5 });
    expect(yaml).toMatch(/# default: "mse"\n  loss: mse/);
    checkDefaults(yaml);
  });
});
