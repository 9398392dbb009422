import type { z } from 'zod';

/**
 * A configuration problem in the operator's words, shared by the coordinator's and the node's
 * configuration (each maps its fields to variables and flags): `NAME: problem`, where NAME is
 * the flag when the value came from one, else the variable. A missing value says "required, not
 * set"; a message that already names its variable (cross-field rules) is not prefixed again.
 */
export function describeConfigIssue(issue: z.core.$ZodIssue, source: { env: string; flag?: string } | undefined, fromFlag: boolean, fieldName: string): { name: string; text: string } {
  const name = source ? (fromFlag && source.flag ? `${source.flag} (or ${source.env})` : source.env) : fieldName;
  const problem =
    issue.code === 'invalid_type' && /received undefined/.test(issue.message)
      ? 'required, not set'
      : issue.code === 'invalid_type' && /received NaN/.test(issue.message)
        ? 'must be a number'
        : issue.message.replace(/^Invalid (input|option): /, '');
  const mentions = source !== undefined && problem.includes(source.env.split(' ')[0]);
  return { name, text: mentions ? problem : `${name}: ${problem}` };
}
