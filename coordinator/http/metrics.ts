import type { Express } from 'express';
import type { Db } from '../db/database.ts';

/** `GET /metrics`: Prometheus text (issue 12). */
export function registerMetricsRoutes(_app: Express, _deps: { db: Db }): void {}
