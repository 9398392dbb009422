import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const compose = parse(readFileSync(fileURLToPath(new URL('../docker-compose.yml', import.meta.url)), 'utf8')) as {
  services: Record<string, { build?: string; image?: string; command?: string[]; environment?: Record<string, string>; volumes?: string[]; depends_on?: Record<string, unknown> | string[]; ports?: string[] }>;
  volumes: Record<string, unknown>;
};
const dockerfile = readFileSync(fileURLToPath(new URL('../Dockerfile', import.meta.url)), 'utf8');

/** docker compose cannot run here (no engine): the file's wiring is checked as data instead. */
describe('docker-compose.yml', () => {
  it('has PostgreSQL, the coordinator and three regional nodes', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['coordinator', 'node-cn', 'node-eu', 'node-us', 'postgres']);
    expect(compose.services.postgres.image).toMatch(/^postgres:/);
  });

  it('points the coordinator at PostgreSQL, with its secrets from the environment and its key on a volume', () => {
    const c = compose.services.coordinator;
    expect(c.command?.[0]).toBe('coordinator');
    const db = new URL(c.environment!.DATABASE_URL);
    expect(db.hostname).toBe('postgres');
    const pg = compose.services.postgres.environment!;
    expect(db.username).toBe(pg.POSTGRES_USER);
    expect(db.pathname.slice(1)).toBe(pg.POSTGRES_DB);
    expect(c.environment!.FEDMARK_ADMIN_TOKEN).toMatch(/^\$\{FEDMARK_ADMIN_TOKEN:\?/); // required, no default secret
    expect(c.environment!.FEDMARK_KEY_PASSPHRASE).toMatch(/^\$\{FEDMARK_KEY_PASSPHRASE:\?/);
    expect(c.volumes).toContain('coordinator-keys:/keys');
    expect(c.depends_on).toHaveProperty('postgres');
  });

  it('gives each node the coordinator, its own data volume, its own state and its jurisdiction', () => {
    const mounts = new Set<string>();
    for (const [name, region, jurisdiction] of [['node-eu', 'eu', 'EU-GDPR'], ['node-us', 'us', 'US-CA-CCPA'], ['node-cn', 'cn', 'CN-PIPL']]) {
      const n = compose.services[name];
      expect(n.command?.[0]).toBe('node');
      expect(n.command?.[n.command.indexOf('--coordinator') + 1]).toBe('http://coordinator:8080');
      const data = n.volumes!.find((v) => v.endsWith(':/data:ro'))!;
      expect(data).toBe(`./deploy/${region}:/data:ro`); // read-only: the node never writes the partner's data
      expect(n.volumes!.some((v) => v.startsWith(`${name}-state:`))).toBe(true);
      expect(n.environment!.FEDMARK_NODE_JURISDICTION).toBe(jurisdiction);
      expect(n.environment!.FEDMARK_NODE_KEY_PASSPHRASE).toMatch(/:\?/);
      expect(n.ports).toBeUndefined(); // nodes accept no inbound connections
      for (const v of n.volumes!) {
        expect(mounts.has(v)).toBe(false); // no volume shared between nodes
        mounts.add(v);
      }
    }
  });

  it('builds one image with the CLI as its entry point', () => {
    for (const name of ['coordinator', 'node-eu', 'node-us', 'node-cn']) expect(compose.services[name].build).toBe('.');
    expect(dockerfile).toMatch(/ENTRYPOINT \["node", "bin\/fedmark.js"\]/);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    for (const dir of ['protocols', 'models', 'coordinator', 'client-node', 'cli', 'bin']) expect(dockerfile).toContain(`COPY ${dir} ./${dir}`);
  });
});
