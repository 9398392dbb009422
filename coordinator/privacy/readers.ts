import { RELEASE_UNDER_DP, releaseMechanism, type ReleaseField, type StudyConfig } from '../../protocols/messages.ts';

/**
 * Who reads what of a study, and which epsilon holds against each of them. This is the one table
 * (README, "What the epsilon covers") the privacy report and `fedmark privacy report` print from.
 * It is derived from the study's configuration (release list, DP settings, node sampling rate q)
 * and from what each role's API views actually return (auth/visibility.ts, the study, round,
 * region and privacy routes, the audit log). Keep it in step with those views: a quantity a
 * reader can see that this table omits makes the printed bound a lie.
 *
 * A DP bound holds against a reader only if everything that reader sees about the protected
 * unit (a whole node under central DP; one row under DP-SGD) is either public, the reader's own,
 * or a noised release of the accounted mechanism (post-processing costs nothing, Dwork & Roth
 * 2014, Prop. 2.1). One exact value that depends on the unit (a row count, a loss, an exact
 * validation histogram) and the guarantee is gone for that reader: "no bound", with the reason.
 * Under node sampling (q < 1) the amplified client-level epsilon also needs the sample to be
 * secret (Balle, Barthe, Gaboardi 2018, privacy amplification by subsampling); a reader who sees
 * who took part gets at best the participation-known epsilon (q = 1 over the rounds).
 */

export type ReaderRole = 'admin' | 'auditor' | 'analyst' | 'node';

/**
 * Per-node update norms and clipped bits under central DP. The coordinator computes them from
 * each node's raw (decrypted) update, so they are exact functions of a partner's data: the norm
 * of a whole node's delta, and whether it passed the clip norm (or the study's update bound). The
 * client-level mechanism protects a node only in the noised sum, so these never reach an audit
 * entry (update.received keeps the hash, size, public count and weight, which is what the chain
 * needs), nor any view but the operator's (auth/visibility.ts), who decrypts every update anyway
 * and is given no bound. Under DP-SGD alone a node's update is already a noised release, and its
 * norm post-processing of it: shown.
 */
export function perNodeNormsWithheld(privacy: { central?: unknown } | null | undefined): boolean {
  return privacy?.central !== undefined && privacy?.central !== null;
}
/** The per-node values withheld under central DP, in update views and update.received entries. */
export const WITHHELD_NORM_FIELDS = ['deltaNorm', 'clipped', 'deltaNormBefore', 'clippedTo'] as const;
export const NORMS_WITHHELD_REASON = "withheld under central DP: a node's update norm and clipped bit are exact functions of its data, outside the noised sum";

/** An update record without its per-node norms: null, with `hidden` saying why (the shape of visibility.ts's hidden fields). */
export function withoutNodeNorms<U extends object>(update: U): U {
  const kept = Object.fromEntries(Object.entries(update).filter(([k]) => !(WITHHELD_NORM_FIELDS as readonly string[]).includes(k)));
  return { ...kept, deltaNorm: null, clipped: null, hidden: { fields: ['deltaNorm', 'clipped'], reason: NORMS_WITHHELD_REASON } } as U;
}
export const READER_ROLES: readonly ReaderRole[] = ['admin', 'auditor', 'analyst', 'node'];

/** What a quantity reveals about the protected unit if it is exact. */
type Kind = 'data' | 'participation' | 'decrypted-updates';

export interface Exposure {
  id: string;
  what: string;
  kind: Kind;
  /** The release-list entry it comes from; null: produced by the coordinator or always released. */
  release: ReleaseField | null;
  /** Which readers see it, and through which view (own: only the reader's own / its region's nodes). */
  seenBy: Partial<Record<ReaderRole, 'all' | 'own'>>;
  /** Row-level (DP-SGD) relevance: does it depend on individual training or validation rows? */
  rowLevel: boolean;
}

/**
 * Is `field` released as an exact value of the node's data? Without DP every field is. Under DP
 * (RELEASE_UNDER_DP) a field is noised and charged, public by construction (the count is the
 * constant 1), or exact; an exact field the study declares public (privacy.publicFields) is still
 * an exact value of the data: declaring it public tells partners, it does not protect anyone.
 */
function exact(config: StudyConfig, field: ReleaseField): boolean {
  if (!config.release.includes(field)) return false;
  return releaseMechanism(config.privacy, field) === 'exact' || (releaseMechanism(config.privacy, field) === 'public' && RELEASE_UNDER_DP[field].mechanism === 'exact');
}

/**
 * Every quantity about nodes' data or participation any reader can get, besides the models.
 * `seenBy` mirrors the views: round detail (updates' meta per node: admin, auditor all; analyst
 * its region's nodes; a node itself), study status (round summaries: admin, auditor, analyst),
 * the regional report (admin, auditor, the region's analyst), the audit log (admin, auditor).
 */
export function exposures(config: StudyConfig): Exposure[] {
  const sampled = (config.privacy?.central?.nodeSamplingRate ?? 1) < 1;
  const centralDp = perNodeNormsWithheld(config.privacy);
  const counts = exact(config, 'update.numExamples');
  const evaluationExact = exact(config, 'evaluation.stats');
  const summaries = sampled ? { admin: 'all', auditor: 'all' } as const : { admin: 'all', auditor: 'all', analyst: 'all' } as const;
  const all: Array<Exposure & { when: boolean }> = [
    { when: true, id: 'decrypted-updates', what: "every node's update as it arrives, before the coordinator adds noise (the coordinator decrypts it)", kind: 'decrypted-updates', release: 'update.weights', seenBy: { admin: 'all' }, rowLevel: false },
    { when: counts, id: 'node-row-counts', what: 'per-node row counts (update.numExamples) in the clear', kind: 'data', release: 'update.numExamples', seenBy: { admin: 'all', auditor: 'all', analyst: 'own' }, rowLevel: true },
    { when: exact(config, 'update.loss'), id: 'node-losses', what: 'per-node training losses (update.loss) in the clear', kind: 'data', release: 'update.loss', seenBy: { admin: 'all', auditor: 'all', analyst: 'own' }, rowLevel: true },
    { when: exact(config, 'update.data') || exact(config, 'status.data'), id: 'node-data-counts', what: 'per-node data-quality counts (update.data, status.data: rows, fills, consent drops) in the clear', kind: 'data', release: null, seenBy: { admin: 'all', auditor: 'all' }, rowLevel: true },
    { when: exact(config, 'update.steps') || exact(config, 'update.trainSeconds'), id: 'node-steps-seconds', what: 'per-node optimizer steps and training seconds (grow with the row count) in the clear', kind: 'data', release: null, seenBy: { admin: 'all', auditor: 'all' }, rowLevel: true },
    // Computed by the coordinator from each update. Under central DP from the raw update: only the
    // operator's round view shows them (perNodeNormsWithheld); under DP-SGD alone they are
    // post-processing of a noised release (rowLevel false), shown as without DP.
    centralDp
      ? { when: true, id: 'node-update-norms', what: 'per-node update norms and the clipped bit (from the raw updates)', kind: 'data', release: null, seenBy: { admin: 'all' }, rowLevel: false }
      : { when: true, id: 'node-update-norms', what: 'per-node update norms after clipping and the clipped bit', kind: 'data', release: null, seenBy: { admin: 'all', auditor: 'all', analyst: 'own', node: 'own' }, rowLevel: false },
    { when: true, id: 'round-participants', what: 'who was sampled for each round (round participants, audit log)', kind: 'participation', release: null, seenBy: { admin: 'all', auditor: 'all', analyst: 'own' }, rowLevel: false },
    // Hidden from analysts and nodes under sampling (auth/visibility.ts: updatesReceived, numExamples, meanLoss, mechanism.nodes); shown at q = 1.
    { when: true, id: 'round-counts', what: 'per-round participant counts (updatesReceived, mechanism.nodes; under DP also the round totals of the constant count 1)', kind: 'participation', release: null, seenBy: sampled ? { admin: 'all', auditor: 'all' } : { admin: 'all', auditor: 'all', analyst: 'all', node: 'all' }, rowLevel: false },
    { when: counts, id: 'round-row-totals', what: 'per-round row totals over all nodes, exact', kind: 'data', release: 'update.numExamples', seenBy: summaries, rowLevel: true },
    { when: exact(config, 'update.loss'), id: 'round-mean-loss', what: 'per-round mean training loss over all nodes, exact', kind: 'data', release: 'update.loss', seenBy: summaries, rowLevel: true },
    { when: counts || exact(config, 'update.loss'), id: 'region-totals', what: "a region's per-round row total and mean loss, exact (regional report)", kind: 'data', release: null, seenBy: { admin: 'all', auditor: 'all', analyst: 'own' }, rowLevel: true },
    evaluationExact
      ? { when: true, id: 'pooled-evaluation', what: "validation metrics pooled exactly from every node's held-out rows (evaluation.stats, not noised)", kind: 'data', release: 'evaluation.stats', seenBy: { admin: 'all', auditor: 'all', analyst: 'all' }, rowLevel: true }
      : // Noised per row and charged to each node's ledger: covered at row level, but the noise is
        // calibrated to one row, not to a whole node's validation set.
        { when: config.privacy?.central !== undefined, id: 'pooled-evaluation', what: "validation metrics pooled from each node's noised histograms (privacy.evaluation: noise calibrated to one row, not to a whole node)", kind: 'data', release: 'evaluation.stats', seenBy: { admin: 'all', auditor: 'all', analyst: 'all' }, rowLevel: false },
  ];
  return all.filter((e) => e.when).map(({ when: _when, ...e }) => e);
}

export interface ReaderBound {
  /** null: no differential privacy for this reader, `reason` says why. */
  epsilon: number | null;
  delta: number | null;
  /** Which figure of the report it is. */
  figure: 'amplified' | 'participation-known' | 'dp-sgd-max' | 'none';
  reason: string;
}

export interface ReaderView {
  reader: ReaderRole;
  /** Quantities this reader sees (exposure ids), with `own` scope where it is only its own / its region's. */
  sees: Array<{ id: string; what: string; scope: 'all' | 'own' }>;
  /** Client-level (a whole node's data, central DP); null when the study has no central DP. */
  clientLevel: ReaderBound | null;
  /** Record-level (one row of a node's data, DP-SGD); null when the study has no DP-SGD. */
  recordLevel: ReaderBound | null;
}

/** The epsilons the report computed, for the table to pick from. */
export interface StudyEpsilons {
  /** Client-level at the sampling rate q over every round charged (null: none charged or no central DP). */
  amplified: number | null;
  /** Client-level with q = 1 over the same rounds: what holds when the sample is known. */
  participationKnown: number | null;
  /** The largest DP-SGD epsilon any node reported (record-level). */
  dpSgdMax: number | null;
}

const fmt = (x: number | null) => (x === null ? 'unbounded' : x.toFixed(4));

/** What `reader` sees of a study with this config. */
export function readerSees(config: StudyConfig, reader: ReaderRole) {
  return exposures(config).flatMap((e) => (e.seenBy[reader] ? [{ ...e, scope: e.seenBy[reader]! }] : []));
}

/** The client-level bound against `reader` (central DP assumed present). */
function clientLevelBound(config: StudyConfig, reader: ReaderRole, eps: StudyEpsilons): ReaderBound {
  const delta = config.privacy!.delta;
  const q = config.privacy!.central!.nodeSamplingRate;
  const seen = readerSees(config, reader);
  const curator = seen.find((e) => e.kind === 'decrypted-updates');
  if (curator) return { epsilon: null, delta: null, figure: 'none', reason: `this reader sees ${curator.what}: central DP trusts the coordinator's operator; the epsilon is for the readers of the published models` };
  const data = seen.filter((e) => e.kind === 'data');
  if (data.length) return { epsilon: null, delta: null, figure: 'none', reason: `this reader sees ${data.map((e) => e.what + (e.scope === 'own' ? " (its own region's nodes)" : '')).join('; ')}: exact values of a node's data, outside the mechanism` };
  const participation = seen.filter((e) => e.kind === 'participation');
  if (q < 1 && participation.length) {
    return { epsilon: eps.participationKnown, delta, figure: 'participation-known', reason: `under node sampling (q=${q}) this reader sees ${participation.map((e) => e.what).join('; ')}, which reveal who was sampled: the amplified epsilon (${fmt(eps.amplified)}) does not hold; the participation-known epsilon is ${fmt(eps.participationKnown)}` };
  }
  return { epsilon: eps.amplified, delta, figure: 'amplified', reason: q < 1 ? `this reader sees only noised models and its own data; who was sampled (q=${q}) stays hidden from it` : 'this reader sees only noised models, public configuration and its own data' };
}

/** The record-level (DP-SGD) bound against `reader`, for the rows of nodes other than its own. */
function recordLevelBound(config: StudyConfig, reader: ReaderRole, eps: StudyEpsilons): ReaderBound {
  const delta = config.privacy!.delta;
  const rows = readerSees(config, reader).filter((e) => e.kind === 'data' && e.rowLevel);
  if (rows.length) return { epsilon: null, delta: null, figure: 'none', reason: `this reader sees ${rows.map((e) => e.what + (e.scope === 'own' ? " (its own region's nodes)" : '')).join('; ')}: they change exactly when one row is added or removed` };
  return { epsilon: eps.dpSgdMax, delta, figure: 'dp-sgd-max', reason: "this reader sees only models trained with DP-SGD (and its own data): the largest DP-SGD epsilon a node reported holds for every other node's rows" };
}

/** Every reader's view and bounds (the README table, and the report's `readers`). */
export function readerViews(config: StudyConfig, eps: StudyEpsilons, only?: ReaderRole): ReaderView[] {
  return READER_ROLES.filter((r) => only === undefined || r === only).map((reader) => ({
    reader,
    sees: readerSees(config, reader).map((e) => ({ id: e.id, what: e.what, scope: e.scope })),
    clientLevel: config.privacy?.central ? clientLevelBound(config, reader, eps) : null,
    recordLevel: config.privacy?.dpSgd ? recordLevelBound(config, reader, eps) : null,
  }));
}
