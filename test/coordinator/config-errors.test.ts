import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { BIN } from '../helpers/processes.ts';
import { ConfigError, COORDINATOR_CONFIG_SOURCES, CoordinatorConfig, loadCoordinatorConfig } from '../../coordinator/config.ts';
import { describeNodeConfigError, NodeConfig } from '../../client-node/config.ts';

const run = promisify(execFile);

/** Issue 12, part 8: a configuration error names what the operator sets, never an internal field. */

const good = { FEDMARK_ADMIN_TOKEN: 'a-good-admin-token-0123', FEDMARK_KEY_PASSPHRASE: 'a-good-key-passphrase' };

function configError(env: Record<string, string>, overrides: Record<string, unknown> = {}): ConfigError {
  try {
    loadCoordinatorConfig(env, overrides);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('coordinator configuration errors', () => {
  it('name the environment variable, not the field', () => {
    const err = configError({ ...good, FEDMARK_ADMIN_TOKEN: 'short' });
    expect(err.message).toBe('invalid coordinator configuration: FEDMARK_ADMIN_TOKEN: must be at least 16 characters');
    expect(err.message).not.toMatch(/adminToken/);
    expect(err.variables).toEqual(['FEDMARK_ADMIN_TOKEN']);
  });

  it('list every problem at once, a missing value as "required, not set", a non-number as "must be a number"', () => {
    const err = configError({ FEDMARK_PORT: 'eighty', FEDMARK_LOG_LEVEL: 'loud' });
    expect(err.variables).toEqual(['FEDMARK_PORT', 'FEDMARK_ADMIN_TOKEN', 'FEDMARK_LOG_LEVEL', 'FEDMARK_KEY_PASSPHRASE (or FEDMARK_KEY_PASSPHRASE_FILE)']);
    expect(err.message).toMatch(/FEDMARK_PORT: must be a number/);
    expect(err.message).toMatch(/FEDMARK_ADMIN_TOKEN: required, not set/);
    expect(err.message).toMatch(/FEDMARK_LOG_LEVEL: expected one of "fatal"/);
    expect(err.message).toMatch(/FEDMARK_KEY_PASSPHRASE \(or FEDMARK_KEY_PASSPHRASE_FILE\): required, not set/);
  });

  it('name the flag when the value came from one', () => {
    expect(configError(good, { port: '99999' }).message).toMatch(/^invalid coordinator configuration: --port \(or FEDMARK_PORT\): Too big/);
  });

  it('cross-field rules and an unreadable passphrase file name their variables once', () => {
    expect(configError({ ...good, FEDMARK_TLS_CERT: 'c.pem' }).message).toBe('invalid coordinator configuration: set both FEDMARK_TLS_CERT and FEDMARK_TLS_KEY, or neither');
    const file = configError({ FEDMARK_ADMIN_TOKEN: good.FEDMARK_ADMIN_TOKEN, FEDMARK_KEY_PASSPHRASE_FILE: '/nonexistent/passphrase' });
    expect(file.message).toBe('invalid coordinator configuration: FEDMARK_KEY_PASSPHRASE_FILE: cannot read /nonexistent/passphrase: ENOENT');
  });

  it('every field has its variable', () => {
    const shape = (CoordinatorConfig as unknown as { shape: Record<string, unknown> }).shape;
    expect(Object.keys(shape).length).toBeGreaterThan(15);
    for (const field of Object.keys(shape)) expect(COORDINATOR_CONFIG_SOURCES, field).toHaveProperty(field);
  });

  it('`fedmark coordinator` prints the variable and exits 1, without a stack trace (real process)', async () => {
    const e = await run(process.execPath, [BIN, 'coordinator', '--port', '0'], { env: { ...process.env, ...good, FEDMARK_ADMIN_TOKEN: 'short' } }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => err,
    );
    expect(e.code).toBe(1);
    expect(e.stderr).toBe('fedmark: invalid coordinator configuration: FEDMARK_ADMIN_TOKEN: must be at least 16 characters\n');
  });
});

describe('node configuration errors', () => {
  it('name the flag and its variable', () => {
    const parsed = NodeConfig.safeParse({ coordinator: 'not a url', keyPassphrase: 'long-enough-passphrase' });
    expect(parsed.success).toBe(false);
    const text = describeNodeConfigError(parsed.error!);
    expect(text).toMatch(/--coordinator \(or FEDMARK_COORDINATOR\): Invalid URL/);
    expect(text).toMatch(/--data \(or FEDMARK_NODE_DATA\): required, not set/);
  });

  it('take --delimiter for a CSV that detection would misread, and name it when invalid', () => {
    const base = { coordinator: 'http://127.0.0.1:8080', data: 'x.csv', keyPassphrase: 'long-enough-passphrase' };
    expect(NodeConfig.parse({ ...base, delimiter: ';' }).delimiter).toBe(';');
    const parsed = NodeConfig.safeParse({ ...base, delimiter: ':' });
    expect(describeNodeConfigError(parsed.error!)).toMatch(/^--delimiter: /);
  });

  it('`fedmark node` with plain http to a remote coordinator names --coordinator (real process)', async () => {
    const e = await run(process.execPath, [BIN, 'node', '--coordinator', 'http://coordinator.example.com', '--data', 'x.csv'], {
      env: { ...process.env, FEDMARK_NODE_KEY_PASSPHRASE: 'long-enough-passphrase', FEDMARK_NODE_JURISDICTION: 'US-CA-CCPA' },
    }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => err,
    );
    expect(e.code).toBe(2);
    expect(e.stderr).toMatch(/invalid node configuration: --coordinator \(or FEDMARK_COORDINATOR\): plain http:\/\/ is only allowed to a loopback coordinator/);
    expect(e.stderr).not.toMatch(/\n\s+at /);
  });
});
