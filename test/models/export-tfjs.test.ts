import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '../../models/tf.ts';
import { encodeTable, inferFeatureSpec, readCsvTable, type CsvTable } from '../../models/index.ts';
import { buildTfjsExport, EXPORT_FILES, registerFileLoader, studyNetwork, decodeStudyModel } from '../../models/export-tfjs.ts';
import { Lineage, lineageProblem, privacyMechanisms, verifyExportFolder } from '../../models/export-lineage.ts';
import { configSha256, statementBytes, type ModelStatement } from '../../models/export-statement.ts';
import { loadExport, scoreTable } from '../../models/predict.ts';
import { targetMap } from '../../models/kinds/regression.ts';
import { predictScores } from '../../models/train.ts';
import { isNumericTarget, encodedWidth } from '../../protocols/feature-spec.ts';
import { StudyConfig, type StudyConfigInput } from '../../protocols/messages.ts';
import { initialWeights, modelTensorSpecs } from '../../protocols/model-spec.ts';
import { encodeWeights, sha256Hex } from '../../protocols/weights-codec.ts';
import { generateIdentity, loadPrivateKey, signArtifact } from '../../protocols/crypto/index.ts';
import { mulberry32 } from '../../protocols/random.ts';

const CHURN = fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url));
const VALUE = fileURLToPath(new URL('../../data/customer_value.csv', import.meta.url));

function slice(path: string, rows: number): CsvTable {
  const t = readCsvTable({ path });
  return { header: t.header, rows: t.rows.slice(0, rows), lineOf: t.lineOf };
}

const churn = slice(CHURN, 300);
const value = slice(VALUE, 300);
const churnSpec = inferFeatureSpec(churn, { target: 'churn', exclude: ['area_code', 'state'] });
const valueSpec = inferFeatureSpec(value, { target: 'spend_12m', exclude: ['customer_id', 'region', 'country', 'consent'], task: 'regression' });

/** Every model kind and regression link there is (models/kinds, protocols/model-spec.ts). */
const CASES: Array<{ name: string; table: CsvTable; study: Partial<StudyConfigInput> }> = [
  { name: 'binary logreg', table: churn, study: { features: churnSpec, model: { kind: 'logreg' } } },
  { name: 'binary mlp', table: churn, study: { features: churnSpec, model: { kind: 'mlp', hidden: [8, 4] } } },
  { name: 'regression linear mse', table: value, study: { features: valueSpec, task: { kind: 'regression', loss: 'mse' }, model: { kind: 'linear' } } },
  { name: 'regression mlp huber', table: value, study: { features: valueSpec, task: { kind: 'regression', loss: 'huber' }, model: { kind: 'mlp', hidden: [8] } } },
  { name: 'regression mlp tweedie (log link)', table: value, study: { features: valueSpec, task: { kind: 'regression', loss: 'tweedie' }, model: { kind: 'mlp', hidden: [8] } } },
  { name: 'regression linear log1p', table: value, study: { features: valueSpec, task: { kind: 'regression', loss: 'log1p' }, model: { kind: 'linear' } } },
];

/** A trained-looking model: seeded kernels and non-zero biases, signed bytes as the coordinator makes them. */
function modelBytes(config: StudyConfig, seed: number): Uint8Array {
  const weights = initialWeights(modelTensorSpecs(config.model, encodedWidth(config.features)), seed);
  const next = mulberry32(seed + 1);
  for (const t of weights) if (t.shape.length === 1) for (let i = 0; i < t.values.length; i++) t.values[i] = (next() - 0.5) * 0.4;
  return encodeWeights(weights);
}

/** fedmark's own prediction: the nodes' network, predictScores, the regression kind's TargetMap. */
async function fedmarkPredictions(config: StudyConfig, bytes: Uint8Array, table: CsvTable): Promise<{ outputs: Float32Array; scores: Float64Array }> {
  const net = await studyNetwork(config, decodeStudyModel(config, bytes));
  const data = encodeTable(table, config.features);
  const outputs = predictScores(net, data.x, data.n, data.width);
  net.dispose();
  const target = config.features.target;
  const toScore = config.task.kind === 'regression' && isNumericTarget(target) ? targetMap(config.task, target).fromOutput : (z: number) => z;
  return { outputs, scores: Float64Array.from(outputs, toScore) };
}

type TestKey = { armored: string; fingerprint: string; sign: (b: Uint8Array) => Promise<string> };

/** The coordinator's statement for an export folder's model, signed by `key` (send-model.ts makes the same). */
async function writeStatement(dir: string, fields: Partial<ModelStatement> & Pick<ModelStatement, 'modelSha256' | 'configSha256' | 'signedBy'>, key: TestKey) {
  const bytes = statementBytes({ format: 'fedmark-model-statement', version: 1, studyId: 'study_x', modelVersion: 2, round: 2, ...fields });
  writeFileSync(join(dir, EXPORT_FILES.statement), bytes);
  writeFileSync(join(dir, EXPORT_FILES.statementSignature), await key.sign(bytes));
}

async function writeExport(dir: string, config: StudyConfig, bytes: Uint8Array, key: TestKey, rounds: Lineage['rounds'] = []) {
  const built = await buildTfjsExport(config, bytes);
  const signature = await key.sign(bytes);
  writeFileSync(join(dir, EXPORT_FILES.modelJson), JSON.stringify(built.modelJson));
  writeFileSync(join(dir, EXPORT_FILES.weights), built.weights);
  writeFileSync(join(dir, EXPORT_FILES.preprocessing), JSON.stringify(built.preprocessing));
  writeFileSync(join(dir, EXPORT_FILES.signedModel), bytes);
  writeFileSync(join(dir, EXPORT_FILES.signature), signature);
  writeFileSync(join(dir, EXPORT_FILES.coordinatorKey), key.armored);
  const lineage: Lineage = Lineage.parse({
    format: 'fedmark-lineage', version: 1, study: { id: 'study_x', name: config.name }, modelVersion: 2, round: 2, modelSha256: sha256Hex(bytes), signature,
    coordinator: { url: null, fingerprint: key.fingerprint }, task: config.task, model: config.model, strategy: config.strategy,
    privacy: { mechanisms: privacyMechanisms(config), accountant: null, delta: null, budgetEpsilon: null, epsilon: null, dpSgdEpsilon: null },
    participants: [], rounds, exportedAt: new Date().toISOString(), config,
  });
  writeFileSync(join(dir, EXPORT_FILES.lineage), JSON.stringify(lineage));
  await writeStatement(dir, { modelSha256: sha256Hex(bytes), configSha256: configSha256(config), signedBy: key.fingerprint }, key);
}

/** Serves a folder over HTTP: tfjs's browser path (fetch), with no fedmark code on the loading side. */
function serve(dir: string): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    try {
      res.end(readFileSync(join(dir, decodeURIComponent(new URL(req.url!, 'http://x').pathname))));
    } catch {
      res.statusCode = 404;
      res.end();
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, server })));
}

describe('TensorFlow.js export of every model kind', () => {
  const root = mkdtempSync(join(tmpdir(), 'fedmark-export-tfjs-'));
  let key: TestKey;
  let otherKey: string;
  let impostor: TestKey;

  beforeAll(async () => {
    const id = await generateIdentity({ name: 'test coordinator', passphrase: 'export-test-passphrase' });
    const priv = await loadPrivateKey(id.privateKeyArmored, 'export-test-passphrase');
    key = { armored: id.publicKeyArmored, fingerprint: id.fingerprint, sign: (b) => signArtifact(b, priv) };
    const other = await generateIdentity({ name: 'impostor', passphrase: 'export-test-passphrase' });
    otherKey = other.publicKeyArmored;
    const otherPriv = await loadPrivateKey(other.privateKeyArmored, 'export-test-passphrase');
    impostor = { armored: other.publicKeyArmored, fingerprint: other.fingerprint, sign: (b) => signArtifact(b, otherPriv) };
    registerFileLoader();
  }, 60_000);
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  CASES.forEach((c, i) => {
    it(`${c.name}: tfjs (file:// and http) predicts as fedmark to 1e-5, predict scores as fedmark, verify passes`, async () => {
      const config = StudyConfig.parse({ name: c.name, rounds: 2, ...c.study });
      const bytes = modelBytes(config, 100 + i);
      const dir = mkdtempSync(join(root, 'x-'));
      await writeExport(dir, config, bytes, key);
      const own = await fedmarkPredictions(config, bytes, c.table);

      const data = encodeTable(c.table, config.features);
      const input = tf.tensor2d(data.x, [data.n, data.width]);
      const { url, server } = await serve(dir);
      try {
        for (const source of [`file://${join(dir, 'model.json')}`, `${url}/model.json`]) {
          const net = await tf.loadLayersModel(source);
          const out = (net.predict(input) as tf.Tensor).dataSync();
          let worst = 0;
          for (let r = 0; r < data.n; r++) worst = Math.max(worst, Math.abs(out[r] - own.outputs[r]));
          expect(worst, source).toBeLessThan(1e-5);
          net.dispose();
        }
      } finally {
        input.dispose();
        server.close();
      }

      // fedmark predict's scoring, without the target column: the customers to score have none.
      const targetAt = c.table.header.indexOf(config.features.target.column);
      const unlabeled: CsvTable = { header: c.table.header.filter((_, k) => k !== targetAt), rows: c.table.rows.map((r) => r.filter((_, k) => k !== targetAt)), lineOf: c.table.lineOf };
      const loaded = await loadExport(dir);
      const scored = scoreTable(loaded, unlabeled);
      for (let r = 0; r < data.n; r++) expect(Math.abs(scored.scores[r] - own.scores[r])).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(own.scores[r])));
      expect(scoreTable(loaded, c.table).metrics?.n).toBe(data.n);
      loaded.model.dispose();

      await expect(verifyExportFolder(dir, { fingerprint: key.fingerprint })).resolves.toMatchObject({ pinned: true });
    }, 60_000);
  });

  it('verify fails after one weight byte changes, with a wrong key, and after an edited layer or encoding', async () => {
    const config = StudyConfig.parse({ name: 'tamper', rounds: 2, ...CASES[1].study });
    const dir = mkdtempSync(join(root, 'tamper-'));
    await writeExport(dir, config, modelBytes(config, 7), key);
    await expect(verifyExportFolder(dir)).resolves.toMatchObject({ pinned: false });

    const bad = (name: string, edit: (d: string) => void) => {
      const copy = mkdtempSync(join(root, `${name}-`));
      cpSync(dir, copy, { recursive: true });
      edit(copy);
      return copy;
    };
    const weights = bad('weights', (d) => {
      const w = readFileSync(join(d, EXPORT_FILES.weights));
      w[41] ^= 0x01;
      writeFileSync(join(d, EXPORT_FILES.weights), w);
    });
    await expect(verifyExportFolder(weights)).rejects.toThrow(/weights\.bin differs from the signed model at byte 41 \(tensor dense_0\/kernel, value 10\)/);
    const fmw = bad('fmw', (d) => {
      const w = readFileSync(join(d, EXPORT_FILES.signedModel));
      w[w.length - 1] ^= 0x01;
      writeFileSync(join(d, EXPORT_FILES.signedModel), w);
    });
    await expect(verifyExportFolder(fmw)).rejects.toThrow(/model\.fmw hashes to .* but lineage\.json records/);
    await expect(verifyExportFolder(dir, { publicKey: otherKey })).rejects.toThrow(/does not verify with coordinator key/);
    await expect(verifyExportFolder(dir, { fingerprint: '0'.repeat(40) })).rejects.toThrow(/not the pinned 0000/);
    const swapped = bad('key', (d) => writeFileSync(join(d, EXPORT_FILES.coordinatorKey), otherKey));
    await expect(verifyExportFolder(swapped)).rejects.toThrow(/does not verify/);
    const layer = bad('layer', (d) => {
      const m = JSON.parse(readFileSync(join(d, EXPORT_FILES.modelJson), 'utf8'));
      m.modelTopology.config.layers.at(-1).config.activation = 'linear';
      writeFileSync(join(d, EXPORT_FILES.modelJson), JSON.stringify(m));
    });
    await expect(verifyExportFolder(layer)).rejects.toThrow(/model\.json: modelTopology is not the study's network/);
    const encoding = bad('encoding', (d) => {
      const p = JSON.parse(readFileSync(join(d, EXPORT_FILES.preprocessing), 'utf8'));
      p.featureSpec.features[0].mean += 1;
      writeFileSync(join(d, EXPORT_FILES.preprocessing), JSON.stringify(p));
    });
    await expect(verifyExportFolder(encoding)).rejects.toThrow(/preprocessing\.json is not the encoding/);
  }, 60_000);

  it("the signed statement binds lineage.json: the reviewer's consistent edits of config, preprocessing and lineage fail, naming the field", async () => {
    const config = StudyConfig.parse({ name: 'lineage', rounds: 2, ...CASES[0].study });
    const bytes = modelBytes(config, 11);
    const dir = mkdtempSync(join(root, 'lineage-'));
    await writeExport(dir, config, bytes, key);
    await expect(verifyExportFolder(dir, { fingerprint: key.fingerprint })).resolves.toMatchObject({ statement: { studyId: 'study_x', modelVersion: 2, configSha256: configSha256(config) } });

    /** A copy of the folder with lineage.json edited, and preprocessing.json rebuilt from the edited config (what a careful forger does). */
    const forged = async (name: string, edit: (l: Lineage) => void) => {
      const copy = mkdtempSync(join(root, `${name}-`));
      cpSync(dir, copy, { recursive: true });
      const lineage = JSON.parse(readFileSync(join(copy, EXPORT_FILES.lineage), 'utf8')) as Lineage;
      edit(lineage);
      writeFileSync(join(copy, EXPORT_FILES.lineage), JSON.stringify(lineage));
      const rebuilt = await buildTfjsExport(StudyConfig.parse(lineage.config), bytes);
      writeFileSync(join(copy, EXPORT_FILES.preprocessing), JSON.stringify(rebuilt.preprocessing));
      return copy;
    };
    const mean = await forged('mean', (l) => {
      const f = l.config.features.features[0];
      if (f.kind === 'numeric') f.mean += 1000;
    });
    await expect(verifyExportFolder(mean, { fingerprint: key.fingerprint })).rejects.toThrow(/model-statement\.json: .*configSha256 .* but the study configuration in the lineage hashes to/);
    const swapped = await forged('swap', (l) => {
      const [a, b] = l.config.features.features;
      [a.name, b.name] = [b.name, a.name];
    });
    await expect(verifyExportFolder(swapped, { fingerprint: key.fingerprint })).rejects.toThrow(/configSha256/);
    const study = await forged('study', (l) => (l.study.id = 'study_forged'));
    await expect(verifyExportFolder(study)).rejects.toThrow(/says studyId "study_x", but the lineage says "study_forged"/);
    const version = await forged('version', (l) => ((l.modelVersion = 9), (l.round = 9)));
    await expect(verifyExportFolder(version)).rejects.toThrow(/says modelVersion 2, but the lineage says 9/);
    const name = await forged('name', (l) => (l.study.name = 'approved model'));
    await expect(verifyExportFolder(name)).rejects.toThrow(/lineage\.json: field study\.name is "approved model", but the signed configuration says "lineage"/);
    const mechanisms = await forged('mechanisms', (l) => (l.privacy.mechanisms = ['central DP (client-level): noise multiplier 8']));
    await expect(verifyExportFolder(mechanisms)).rejects.toThrow(/field privacy\.mechanisms/);
    const round = await forged('round', (l) => (l.round = 1));
    await expect(verifyExportFolder(round)).rejects.toThrow(/says round 2, but the lineage says 1/);

    // A statement for another model (genuinely signed) does not vouch for this one.
    const other = mkdtempSync(join(root, 'other-model-'));
    cpSync(dir, other, { recursive: true });
    await writeStatement(other, { modelSha256: 'ab'.repeat(32), configSha256: configSha256(config), signedBy: key.fingerprint }, key);
    await expect(verifyExportFolder(other)).rejects.toThrow(/says modelSha256 "abab/);
    // The same statement, signed by another key.
    const signer = mkdtempSync(join(root, 'impostor-'));
    cpSync(dir, signer, { recursive: true });
    await writeStatement(signer, { modelSha256: sha256Hex(bytes), configSha256: configSha256(config), signedBy: key.fingerprint }, impostor);
    await expect(verifyExportFolder(signer, { fingerprint: key.fingerprint })).rejects.toThrow(/model statement's signature does not verify with coordinator key/);
    const claims = mkdtempSync(join(root, 'claims-'));
    cpSync(dir, claims, { recursive: true });
    await writeStatement(claims, { modelSha256: sha256Hex(bytes), configSha256: configSha256(config), signedBy: impostor.fingerprint }, key);
    await expect(verifyExportFolder(claims)).rejects.toThrow(/says signedBy/);

    // An export from before signed statements: refused, unless the caller accepts an unverified lineage.
    const old = mkdtempSync(join(root, 'old-'));
    cpSync(dir, old, { recursive: true });
    rmSync(join(old, EXPORT_FILES.statement));
    rmSync(join(old, EXPORT_FILES.statementSignature));
    await expect(verifyExportFolder(old)).rejects.toThrow(/predates signed model statements.*--allow-unsigned-lineage/);
    await expect(verifyExportFolder(old, {}, { allowUnsignedLineage: true })).resolves.toMatchObject({ statement: null });
  }, 60_000);

  it("an analyst's export under node sampling (updatesReceived null) fits the schema and verifies; a bad field is named", async () => {
    const config = StudyConfig.parse({ name: 'sampled', rounds: 2, ...CASES[0].study, privacy: { accountant: 'rdp', delta: 1e-5, central: { noiseMultiplier: 2, clipping: { kind: 'fixed', norm: 1 }, nodeSamplingRate: 0.5 } } });
    const dir = mkdtempSync(join(root, 'sampled-'));
    await writeExport(dir, config, modelBytes(config, 5), key, [{ round: 1, participants: [], updatesReceived: null, validationMetrics: null }, { round: 2, participants: ['node_1'], updatesReceived: null, validationMetrics: { auc: 0.7 } }]);
    await expect(verifyExportFolder(dir, { fingerprint: key.fingerprint })).resolves.toMatchObject({ lineage: { rounds: [{ updatesReceived: null }, { updatesReceived: null }] } });
    const lineage = JSON.parse(readFileSync(join(dir, EXPORT_FILES.lineage), 'utf8'));
    expect(lineageProblem(lineage)).toBeNull();
    lineage.rounds[1].updatesReceived = 'two';
    expect(lineageProblem(lineage)).toMatch(/^field rounds\.1\.updatesReceived: /);
  }, 60_000);

  it('scoring names every missing feature column, and a bad cell by line and column', async () => {
    const config = StudyConfig.parse({ name: 'errors', rounds: 2, ...CASES[0].study });
    const dir = mkdtempSync(join(root, 'errors-'));
    await writeExport(dir, config, modelBytes(config, 3), key);
    const loaded = await loadExport(dir);
    const drop = new Set(['total_day_minutes', 'voice_mail_plan']);
    const missing: CsvTable = { header: churn.header.filter((h) => !drop.has(h)), rows: churn.rows.map((r) => r.filter((_, k) => !drop.has(churn.header[k]))), lineOf: churn.lineOf };
    expect(() => scoreTable(loaded, missing)).toThrow(/line 1: missing feature columns "voice_mail_plan", "total_day_minutes"/);
    const at = churn.header.indexOf('total_eve_calls');
    const broken: CsvTable = { ...churn, rows: churn.rows.map((r, i) => (i === 4 ? r.map((c, k) => (k === at ? 'lots' : c)) : r)) };
    expect(() => scoreTable(loaded, broken)).toThrow(/line 6\b.*"total_eve_calls".*"lots"/);
    loaded.model.dispose();
  }, 60_000);
});
