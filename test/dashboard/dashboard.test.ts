import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { chromium, type Browser, type Page } from 'playwright-core';
import { backendOrSkip, type DatabaseBackend } from '../helpers/databases.ts';
import { churnStudy, coordinatorProcess, nodeProcess, type CoordinatorProcess } from '../helpers/federation.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';

/**
 * The dashboard (issue 12, part 5) in headless Chromium against a real coordinator process on
 * PostgreSQL and three real node processes: a 3-round study under central DP, whose rounds the
 * test opens one at a time (autoAdvance false), so the page is watched as each round completes.
 * Every number the page shows (rounds, metric values, epsilon spent) is checked against the
 * API's answer for the same token; an analyst and an auditor see what the API shows them.
 * Screenshots go to test-artifacts/dashboard/.
 */

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(process.cwd(), 'test-artifacts', 'dashboard');
const ROUNDS = 3;
const WAIT = 240_000;
const missingChromium = existsSync(CHROMIUM) ? undefined : `Debian's chromium is not installed at ${CHROMIUM} (apt-get install chromium); this test never downloads a browser`;
const postgres = await backendOrSkip('postgres');
const skip = missingChromium ?? (postgres ? undefined : 'PostgreSQL is not reachable on 127.0.0.1:5432');
if (skip) console.warn(`test/dashboard/dashboard.test.ts skipped: ${skip}`);

type Json = Record<string, any>;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skip !== undefined)(`dashboard in headless Chromium${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let dir: string;
  let database: Awaited<ReturnType<DatabaseBackend['create']>>;
  let coordinator: CoordinatorProcess;
  const nodes: RunningProcess[] = [];
  let browser: Browser;
  let page: Page;
  let studyId: string;
  const tokens: Record<'analyst' | 'auditor' | 'stranger', string> = { analyst: '', auditor: '', stranger: '' };

  /** GET as `token` (the admin's by default), as the page would. */
  const api = async (path: string, token = coordinator.admin): Promise<Json> => {
    const res = await fetch(coordinator.url + path, { headers: { authorization: `Bearer ${token}` } });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res.json() as Promise<Json>;
  };
  const post = async (path: string, body: unknown) => (await coordinator.api(path, { method: 'POST', body: JSON.stringify(body) })).json() as Promise<Json>;
  const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });

  async function signIn(token: string) {
    await page.goto(`${coordinator.url}/#/`);
    if (await page.locator('#sign-out').isVisible()) await page.click('#sign-out');
    await page.fill('#token', token);
    await page.click('#login-form button[type=submit]');
    await page.locator('#studies-view').waitFor({ state: 'visible' });
  }

  /** Opens the next round once every node is ready (a node reports ready between rounds). */
  async function openRound(round: number) {
    for (;;) {
      const res = await fetch(`${coordinator.url}/v1/studies/${studyId}/rounds`, { method: 'POST', headers: { authorization: `Bearer ${coordinator.admin}`, 'content-type': 'application/json' }, body: '{}' });
      if (res.status === 201) return expect(((await res.json()) as Json).round).toBe(round);
      const body = (await res.json()) as Json;
      if (!['NOT_ENOUGH_NODES', 'ROUND_OPEN'].includes(body.error?.code)) throw new Error(`opening round ${round}: ${res.status} ${JSON.stringify(body)}`);
      await sleep(300);
    }
  }

  /** The page's rounds table, as shown. */
  const shownRounds = () => page.$$eval('#rounds tbody tr', (rows) => rows.map((tr) => {
    const cell = (f: string) => tr.querySelector(`[data-field="${f}"]`) as HTMLElement;
    return { round: Number(cell('round').textContent), phase: (tr as HTMLElement).dataset.phase, reported: cell('reported').textContent, invited: cell('invited').textContent, metric: cell('metric').dataset.value, metricText: cell('metric').textContent, noised: cell('metric').dataset.noised };
  }));
  const shownPrivacy = () => page.$$eval('#privacy tbody tr', (rows) => rows.map((tr) => ({ round: Number((tr as HTMLElement).dataset.round), epsilonRound: (tr.querySelector('[data-field="epsilonRound"]') as HTMLElement).dataset.value, epsilonTotal: (tr.querySelector('[data-field="epsilonTotal"]') as HTMLElement).dataset.value, text: tr.querySelector('[data-field="epsilonTotal"]')!.textContent })));
  const shownNodes = () => page.$$eval('#participants tbody tr', (rows) => rows.map((tr) => (tr as HTMLElement).dataset.node).sort());

  /** Every round row and privacy row the page shows equals the API's answer for `token`. */
  async function expectPageMatchesApi(token: string) {
    const status = await api(`/v1/studies/${studyId}`, token);
    const privacy = await api(`/v1/studies/${studyId}/privacy`, token);
    const rounds = await shownRounds();
    expect(rounds.map((r) => r.round)).toEqual(status.rounds.map((r: Json) => r.round));
    for (const [i, r] of status.rounds.entries()) {
      const auc = r.validationMetrics?.auc ?? r.validationAuc;
      expect(rounds[i].phase).toBe(r.phase);
      expect(rounds[i].reported).toBe(String(r.updatesReceived));
      expect(rounds[i].invited).toBe(String(r.participants.length));
      expect(rounds[i].metric).toBe(auc === null ? '' : String(auc));
      if (auc !== null) expect(rounds[i].metricText).toBe(`${auc.toFixed(4)}${r.validationMetrics?.noised === 1 ? ' (noised)' : ''}`);
    }
    expect(await shownPrivacy()).toEqual(privacy.rounds.map((r: Json) => ({ round: r.round, epsilonRound: String(r.epsilonRound), epsilonTotal: String(r.epsilonTotal), text: r.epsilonTotal.toFixed(3) })));
    expect(await page.locator('#privacy-summary').getAttribute('data-spent')).toBe(String(privacy.spentEpsilon));
    expect(await shownNodes()).toEqual(status.nodes.map((n: Json) => n.id).sort());
    return { status, privacy };
  }

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    dir = mkdtempSync(join(tmpdir(), 'fedmark-dashboard-'));
    database = await postgres!.create();
    coordinator = await coordinatorProcess(dir, database);
    await coordinator.start();
    const { config, regions } = churnStudy(dir, {
      name: 'dashboard-churn',
      rounds: ROUNDS,
      autoAdvance: false,
      training: { localEpochs: 2, learningRate: 0.05, validationFraction: 0.2 },
      privacy: { accountant: 'rdp', delta: 1e-5, central: { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 }, nodeSamplingRate: 1 } },
    } as Json);
    studyId = (await post('/v1/studies', config)).id;
    for (const { region, csv } of regions) {
      const { token } = await post('/v1/enrollment-tokens', { studyId, nodeName: region, region });
      nodes.push(nodeProcess(coordinator.url, token, csv));
    }
    tokens.analyst = (await post('/v1/tokens', { role: 'analyst', name: 'team 408', region: 'area_code_408' })).token;
    tokens.auditor = (await post('/v1/tokens', { role: 'auditor', name: 'external auditor' })).token;
    tokens.stranger = (await post('/v1/tokens', { role: 'analyst', name: 'team elsewhere', region: 'area_code_999' })).token;
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  }, 300_000);

  afterAll(async () => {
    await browser?.close();
    await Promise.all([...nodes, ...(coordinator?.all ?? [])].map((p) => p.stop()));
    await database?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it('serves its pages with a CSP that refuses inline script', async () => {
    const res = await fetch(`${coordinator.url}/`);
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy') ?? '(no content-security-policy header)';
    expect(csp).toMatch(/script-src 'self'(;|$)/);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
    await page.goto(`${coordinator.url}/`);
    await page.locator('#login').waitFor({ state: 'visible' });
    // An injected inline script does not run: the browser enforces the header.
    const ran = await page.evaluate(() => {
      const s = document.createElement('script');
      s.textContent = 'window.__inlineRan = true';
      document.body.append(s);
      return (window as unknown as { __inlineRan?: boolean }).__inlineRan === true;
    });
    expect(ran).toBe(false);
  });

  it('refuses a bad token with the API message and keeps the tab signed out', async () => {
    await page.goto(`${coordinator.url}/`);
    await page.fill('#token', 'not-a-real-token-0123456789');
    await page.click('#login-form button[type=submit]');
    await expect.poll(() => page.locator('#login-error').textContent()).toMatch(/Token refused \(UNAUTHENTICATED\)/);
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    await shot('01-login-refused');
  });

  it('follows the study round by round as the admin, every number as the API gives it', async () => {
    await signIn(coordinator.admin);
    expect(await page.evaluate(() => Object.values(sessionStorage))).toEqual([coordinator.admin]);
    const row = page.locator(`#studies tbody tr[data-study="${studyId}"]`);
    await row.waitFor();
    expect(await row.locator('td').allTextContents()).toEqual(expect.arrayContaining(['dashboard-churn', 'running', `0 / ${ROUNDS}`, 'binary \u00b7 logreg']));
    await shot('02-studies');
    await row.locator('a').click();
    // Nodes enroll and report ready; the page shows them as the API does.
    await expect.poll(async () => (await api(`/v1/studies/${studyId}`)).nodes.filter((n: Json) => n.state === 'ready').length, { timeout: WAIT, interval: 500 }).toBe(3);
    for (let round = 1; round <= ROUNDS; round++) {
      await openRound(round);
      // The page updates by itself (long-poll): nothing here reloads it.
      await page.locator(`#rounds tr[data-round="${round}"][data-phase="completed"]`).waitFor({ timeout: WAIT });
      await page.waitForFunction((n) => document.querySelectorAll('#privacy tbody tr').length === n, round, { timeout: WAIT });
      if (round < ROUNDS) {
        const { status } = await expectPageMatchesApi(coordinator.admin);
        expect(status.state).toBe('running');
        expect(await page.locator('#refresh-note').textContent()).toMatch(/Following the study live/);
        await shot(`03-admin-round-${round}`);
      }
    }
    if ((await api(`/v1/studies/${studyId}`)).state === 'running') await fetch(`${coordinator.url}/v1/studies/${studyId}/rounds`, { method: 'POST', headers: { authorization: `Bearer ${coordinator.admin}`, 'content-type': 'application/json' }, body: '{}' });
    await page.locator('#study-title[data-state="completed"]').waitFor({ timeout: WAIT });
    const { status, privacy } = await expectPageMatchesApi(coordinator.admin);
    expect(status.rounds.map((r: Json) => r.phase)).toEqual(['completed', 'completed', 'completed']);
    // Central DP: every evaluation is noised, and the page marks each one.
    expect((await shownRounds()).map((r) => r.noised)).toEqual(['1', '1', '1']);
    expect(privacy.spentEpsilon).toBeGreaterThan(0);
    expect(await page.locator('#privacy-summary').textContent()).toContain(`\u03b5 spent ${privacy.spentEpsilon.toFixed(3)}`);
    // Two uPlot charts drew their canvases.
    expect(await page.locator('#metric-chart canvas').count()).toBe(1);
    expect(await page.locator('#privacy-chart canvas').count()).toBe(1);
    const audit = await api('/v1/dashboard/audit');
    expect(audit.ok).toBe(true);
    expect(await page.locator('#audit').getAttribute('data-state')).toBe('verified');
    expect(await page.locator('#audit [data-field="lastCheckpoint"]').getAttribute('data-seq')).toBe(String(audit.lastCheckpoint.seq));
    expect(await page.locator('#participants tbody tr').count()).toBe(3);
    await shot('04-admin-completed');
  }, 900_000);

  it('shows refusals and why a study stopped: a node over its own ceiling, then the budget refusing round 2', async () => {
    // A second study, advancing by itself, whose budget pays for round 1 only (epsilon 4.73 of 6;
    // two rounds would be 7.08 at z = 1). Its third node has its own epsilon ceiling, which a
    // study without DP-SGD cannot respect: it refuses to train, and round 1 goes on without it.
    const stopDir = join(dir, 'budget');
    const { config, regions } = churnStudy(stopDir, {
      name: 'dashboard-budget',
      rounds: 3,
      minNodesPerRound: 2,
      training: { localEpochs: 1, learningRate: 0.05, validationFraction: 0.2 },
      privacy: { accountant: 'rdp', delta: 1e-5, budgetEpsilon: 6, central: { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 }, nodeSamplingRate: 1 } },
    } as Json);
    const stopped = (await post('/v1/studies', config)).id;
    for (const [i, { region, csv }] of regions.entries()) {
      const { token } = await post('/v1/enrollment-tokens', { studyId: stopped, nodeName: region, region });
      nodes.push(i < 2 ? nodeProcess(coordinator.url, token, csv) : runFedmark(['node', '--coordinator', coordinator.url, '--token', token, '--data', csv, '--state-dir', join(csv, '..', 'state'), '--backend', 'wasm', '--max-epsilon', '1']));
    }
    await signIn(coordinator.admin);
    await page.locator(`#studies tbody tr[data-study="${stopped}"] a`).click();
    await page.locator('#stop-reason').waitFor({ state: 'visible', timeout: WAIT });
    const privacy = await api(`/v1/studies/${stopped}/privacy`);
    expect(privacy.stopReason).toMatch(/budget/i);
    expect(await page.locator('#stop-reason').textContent()).toBe(`Stopped: ${privacy.stopReason}`);
    const status = await api(`/v1/studies/${stopped}`);
    const refuser = status.nodes.find((n: Json) => n.region === 'area_code_510');
    expect(refuser.state).toBe('privacy-ceiling');
    const round1 = await api(`/v1/studies/${stopped}/rounds/1`);
    expect(round1.mechanism.failures.map((f: Json) => [f.nodeId, f.reason ?? f.state])).toEqual([[refuser.id, 'privacy-ceiling']]);
    expect(await page.locator('#refusals li').allTextContents()).toEqual([
      `study stopped: ${privacy.stopReason}`,
      `area_code_510 (area_code_510): privacy-ceiling \u2014 ${refuser.message}`,
      'round 1: area_code_510 (area_code_510) did not contribute (privacy-ceiling)',
    ]);
    await page.locator('#study-title:not([data-state="running"])').waitFor({ timeout: WAIT });
    expect(await page.locator('#refresh-note').textContent()).toMatch(/not refreshing/);
    expect((await shownPrivacy()).map((r) => r.round)).toEqual([1]);
    await shot('04b-admin-budget-stopped');
  }, 600_000);

  it("shows an analyst only its region's node, the global numbers, and no audit chain", async () => {
    await signIn(tokens.analyst);
    await page.locator(`#studies tbody tr[data-study="${studyId}"] a`).click();
    await page.locator('#study-title[data-state="completed"]').waitFor({ timeout: WAIT });
    const { status, privacy } = await expectPageMatchesApi(tokens.analyst);
    expect(status.nodes.map((n: Json) => n.region)).toEqual(['area_code_408']);
    expect(await page.locator('#participants tbody tr').count()).toBe(1);
    // Every update is counted, but only its own region's node is listed as invited.
    expect((await shownRounds()).map((r) => [r.reported, r.invited])).toEqual([['3', '1'], ['3', '1'], ['3', '1']]);
    expect(privacy.nodes).toEqual([]);
    expect(await page.locator('#participants [data-field="epsilon"]').count()).toBe(0);
    expect(await page.locator('#audit').getAttribute('data-state')).toBe('refused');
    expect(await page.locator('#audit [data-field="status"]').textContent()).toMatch(/Not available to this token: the analyst role may not do this/);
    await shot('05-analyst');
  }, 2 * WAIT);

  it("shows an analyst of a region without a node neither the study nor a way into it", async () => {
    await signIn(tokens.stranger);
    await page.locator('#studies-empty').waitFor({ state: 'visible' });
    expect(await page.locator('#studies tbody tr').count()).toBe(0);
    await page.goto(`${coordinator.url}/#/studies/${studyId}`);
    await expect.poll(() => page.locator('#study-error').textContent()).toMatch(/The API refused this study \(FORBIDDEN\): region area_code_999 has no node/);
    await shot('06-analyst-other-region');
  }, 2 * WAIT);

  it('shows the auditor every node and the audit chain, and a tampered entry as a broken chain', async () => {
    await signIn(tokens.auditor);
    await page.locator(`#studies tbody tr[data-study="${studyId}"] a`).click();
    await page.locator('#study-title[data-state="completed"]').waitFor({ timeout: WAIT });
    await expectPageMatchesApi(tokens.auditor);
    expect(await page.locator('#participants tbody tr').count()).toBe(3);
    expect(await page.locator('#participants [data-field="epsilon"]').count()).toBe(3);
    expect(await page.locator('#audit').getAttribute('data-state')).toBe('verified');
    await shot('07-auditor');
    // Rewrite one entry behind the coordinator's back, as a superuser could (its triggers keep
    // the log append-only; session_replication_role = replica skips them).
    const client = new pg.Client({ connectionString: database.databaseUrl });
    await client.connect();
    try {
      await client.query('begin');
      await client.query('set local session_replication_role = replica');
      await client.query(`update audit_log set data = jsonb_set(data::jsonb, '{tampered}', 'true')::text where seq = (select min(seq) from audit_log where kind = 'study.created')`);
      await client.query('commit');
    } finally {
      await client.end();
    }
    await page.reload();
    await page.locator('#audit[data-state="broken"]').waitFor({ timeout: WAIT });
    expect(await page.locator('#audit [data-field="status"]').textContent()).toMatch(/^BROKEN \(modified\)/);
    await shot('08-auditor-tampered');
  }, 2 * WAIT);
});
