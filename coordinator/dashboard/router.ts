import type { Express } from 'express';

/** The dashboard's static files at `/` (issue 12). */
export function registerDashboardRoutes(_app: Express): void {}
