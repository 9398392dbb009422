import type { Request } from 'express';
import type { Db } from '../db/database.ts';
import { ForbiddenError } from '../errors.ts';
import { regionHasNode } from '../nodes/repository.ts';
import type { Principal } from './principal.ts';
import { studyIdsWithNodeInRegion } from './repository.ts';
import type { RequestGuard } from './request-auth.ts';

/**
 * Who may see anything of a study: checked for every route under /v1/studies/:studyId, from the
 * bearer token alone, before the route runs (an express param callback, so a new route is covered
 * without asking) and before its body is read.
 *
 * - admin and auditor: every study (a study that does not exist is then a 404);
 * - analyst: only a study in which its region has a node (a regional team reads what its region
 *   helped train). Any other study, existing or not, is the same 403 with the same message: the
 *   answer does not tell whether the study exists;
 * - node: only its own study. Every resource of another study, whether or not the study, round
 *   or model exists, is the same 403: no 404-vs-403 oracle.
 *
 * Roles a route does not serve at all are refused by the route itself (requireRole).
 *
 * @example
 *   const access = createStudyAccess({ guard, db });
 *   registerParamValidators(app, { studyId: access.check });
 */
export function createStudyAccess(deps: { guard: Pick<RequestGuard, 'claim'>; db: Db }) {
  return {
    async check(req: Request, _res: unknown, studyId: string): Promise<void> {
      const p = await deps.guard.claim(req);
      if (p.role === 'analyst' && !(await regionHasNode(deps.db, studyId, p.region))) throw new ForbiddenError(`region ${p.region} has no node in study ${studyId}: analyst token ${p.id} may not read it`);
      if (p.role === 'node' && p.node.studyId !== studyId) throw new ForbiddenError(`node ${p.id} is not enrolled in study ${studyId}`);
    },

    /** The study list as `p` may see it: an analyst, only the studies in which its region has a node. */
    async visibleStudies<S extends { id: string }>(p: Principal, studies: S[]): Promise<S[]> {
      if (p.role !== 'analyst') return studies;
      const visible = await studyIdsWithNodeInRegion(deps.db, p.region);
      return studies.filter((s) => visible.has(s.id));
    },
  };
}
export type StudyAccess = ReturnType<typeof createStudyAccess>;
