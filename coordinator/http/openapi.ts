import type { Express } from 'express';

/** `GET /openapi.json` and the API reference page (issue 12). */
export function registerOpenApiRoutes(_app: Express): void {}
