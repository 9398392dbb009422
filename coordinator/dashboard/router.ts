import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Express, Response } from 'express';
import { requireRole } from '../auth/principal.ts';
import type { RequestGuard } from '../auth/request-auth.ts';
import type { StudyAccess } from '../auth/study-access.ts';
import type { Db } from '../db/database.ts';
import { route } from '../http/middleware.ts';
import { createDashboardService } from './dashboard-service.ts';

/**
 * The static folder beside this file; when this module runs from the demo's bundle (cli/launcher.ts
 * writes it under node_modules/.cache/fedmark/), the package's own coordinator/dashboard/static,
 * found by walking up from the bundle.
 */
const STATIC_DIR = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  const beside = join(here, 'static');
  if (existsSync(join(beside, 'index.html'))) return beside;
  for (let dir = here; dirname(dir) !== dir; dir = dirname(dir)) {
    const candidate = join(dir, 'coordinator', 'dashboard', 'static');
    if (existsSync(join(candidate, 'index.html'))) return candidate;
  }
  return beside;
})();
const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

/**
 * The pages' Content-Security-Policy: scripts and styles from this origin only (no inline script,
 * no eval, no CDN), API calls to this origin only, never framed. uPlot sizes its elements through
 * element.style (CSSOM), which style-src does not govern, so no 'unsafe-inline' is needed.
 */
export const DASHBOARD_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export interface DashboardDeps {
  guard: RequestGuard;
  db: Db;
  /** The same study filter as GET /v1/studies (auth/study-access.ts): the dashboard has no permission system of its own. */
  access: Pick<StudyAccess, 'visibleStudies'>;
}

/** The files served, by URL: the static folder's files under /dashboard/, index.html at /, and uPlot from node_modules. */
function staticFiles(): Map<string, { type: string; body: Buffer }> {
  const files = new Map<string, { type: string; body: Buffer }>();
  for (const name of readdirSync(STATIC_DIR)) {
    const type = TYPES[extname(name)];
    if (!type) continue;
    const body = readFileSync(join(STATIC_DIR, name));
    files.set(name === 'index.html' ? '/' : `/dashboard/${name}`, { type, body });
  }
  // uPlot (MIT, its licence in node_modules/uplot/LICENSE) is served as installed: no copy to keep in step.
  const uplot = dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.iife.min.js'));
  files.set('/dashboard/vendor/uPlot.iife.min.js', { type: TYPES['.js'], body: readFileSync(join(uplot, 'uPlot.iife.min.js')) });
  files.set('/dashboard/vendor/uPlot.min.css', { type: TYPES['.css'], body: readFileSync(join(uplot, 'uPlot.min.css')) });
  return files;
}

function sendStatic(res: Response, file: { type: string; body: Buffer }) {
  res.set({ 'content-type': file.type, 'content-security-policy': DASHBOARD_CSP, 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer', 'cache-control': 'no-cache' });
  res.send(file.body);
}

/**
 * The dashboard (issue 12): its static pages at `/` and `/dashboard/*` (read once at start-up,
 * one route per file: no path is ever mapped onto the file system), and two read-only API routes
 * the pages need beyond the existing ones:
 * - GET /v1/dashboard/studies: the studies the caller may see, with kind, rounds and creation time;
 * - GET /v1/dashboard/audit: the audit chain's verification status and last checkpoint (admins and
 *   auditors, as GET /v1/audit/export), without signing a new checkpoint.
 *
 * @example
 *   registerDashboardRoutes(app, { guard, db, access });
 */
export function registerDashboardRoutes(app: Express, deps: DashboardDeps): void {
  const dashboard = createDashboardService(deps);
  for (const [path, file] of staticFiles()) app.get(path, (_req, res) => sendStatic(res, file));
  app.get('/v1/dashboard/studies', route(async (req, res) => {
    const p = await deps.guard.who(req);
    requireRole(p, 'admin', 'auditor', 'analyst');
    res.json({ studies: await dashboard.studies(p) });
  }));
  app.get('/v1/dashboard/audit', route(async (req, res) => {
    requireRole(await deps.guard.who(req), 'admin', 'auditor');
    res.json(await dashboard.auditStatus());
  }));
}
