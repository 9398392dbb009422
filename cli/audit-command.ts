import type { Command } from 'commander';

export interface AuditCommandDeps {
  /** Export through a running coordinator's HTTP API. */
  exportFromCoordinator?: (opts: { coordinator: string; token: string; out: string }) => Promise<void>;
  /** Export straight from the coordinator's database (PostgreSQL URL or embedded data folder). */
  exportFromDatabase?: (opts: { databaseUrl?: string; dataDir?: string; out: string }) => Promise<void>;
}

const errorMessage = (err: unknown) => (err instanceof Error ? err.message : String(err));

/**
 * `fedmark audit verify <dir>` and `fedmark audit export --out DIR ...`.
 * Exit codes: 0 verified / exported, 1 verification failed or the export failed, 2 usage error.
 */
export function registerAuditCommands(program: Command, deps: AuditCommandDeps): void {
  const audit = program.command('audit').description('export the audit log and verify an export offline');

  audit
    .command('verify')
    .description('verify an audit export offline: hash chain, signed checkpoints, manifest (positions are line numbers of entries.jsonl)')
    .argument('<dir>', 'export folder')
    .option('--fingerprint <fpr>', 'the coordinator key fingerprint published by the operator; without it the key inside the export is trusted')
    .action(async (dir: string, opts: { fingerprint?: string }) => {
      const { verifyAuditExport } = await import('../protocols/audit/audit-export.ts');
      let result;
      try {
        result = await verifyAuditExport(dir, { expectedFingerprint: opts.fingerprint });
      } catch (err) {
        process.stderr.write(`FAILED: cannot verify ${dir}: ${errorMessage(err)}\n`);
        process.exitCode = 1;
        return;
      }
      if (result.ok) {
        process.stdout.write(`OK: ${result.entries} entries, ${result.checkpoints} checkpoints, head ${result.head}\n`);
        process.stdout.write(`coordinator key ${result.coordinatorFingerprint}${opts.fingerprint ? ' (matches --fingerprint)' : ' (pass --fingerprint to check it against the published one)'}\n`);
        if (result.uncheckpointedEntries > 0) {
          const from = (result.lastCheckpointSeq ?? 0) + 1;
          process.stderr.write(
            `warning: ${result.uncheckpointedEntries} entr${result.uncheckpointedEntries === 1 ? 'y' : 'ies'} (seq ${from}..${result.entries}) after the last signed checkpoint are protected by the chain only; their deletion would not be detectable\n`,
          );
        }
        process.exitCode = 0;
        return;
      }
      const where = result.seq !== null ? ` at entry ${result.seq}` : '';
      process.stderr.write(`FAILED: ${result.problem}${where}: ${result.message}\n`);
      process.exitCode = 1;
    });

  audit
    .command('export')
    .description('export the audit log to a folder (from a running coordinator, or directly from its database)')
    .requiredOption('--out <dir>', 'output folder (must not already hold an export)')
    .option('--coordinator <url>', 'coordinator URL')
    .option('--token <token>', 'auditor API token for --coordinator (env FEDMARK_TOKEN; an admin token works too, and FEDMARK_ADMIN_TOKEN is the last fallback)')
    .option('--database-url <url>', 'the coordinator\'s PostgreSQL URL (opened read-only, never migrated: SELECT on audit_log, audit_checkpoints and coordinator_keys suffices)')
    .option('--data-dir <dir>', 'the coordinator\'s embedded database folder (stop the coordinator first: PGlite allows one process; never migrated)')
    .action(async (opts: { out: string; coordinator?: string; token?: string; databaseUrl?: string; dataDir?: string }) => {
      const usage = (message: string) => {
        process.stderr.write(`fedmark audit export: ${message}\n`);
        process.exitCode = 2;
      };
      const sources = [opts.coordinator && '--coordinator', opts.databaseUrl && '--database-url', opts.dataDir && '--data-dir'].filter(Boolean);
      if (sources.length !== 1) {
        usage(sources.length === 0 ? 'choose a source: --coordinator URL --token T, --database-url URL or --data-dir DIR' : `choose one source, not ${sources.join(' and ')}`);
        return;
      }
      try {
        if (opts.coordinator) {
          // An auditor token is what the issue hands auditors (read-only, no weights); the
          // operator's own admin token is accepted as the last resort on the operator's machine.
          const token = opts.token || process.env.FEDMARK_TOKEN || process.env.FEDMARK_ADMIN_TOKEN;
          if (!token) return usage('--coordinator needs an auditor token: --token T (or FEDMARK_TOKEN)');
          if (!deps.exportFromCoordinator) return usage('exporting from a coordinator is not available in this build');
          await deps.exportFromCoordinator({ coordinator: opts.coordinator, token, out: opts.out });
        } else {
          if (!deps.exportFromDatabase) return usage('exporting from a database is not available in this build');
          await deps.exportFromDatabase({ databaseUrl: opts.databaseUrl, dataDir: opts.dataDir, out: opts.out });
        }
      } catch (err) {
        process.stderr.write(`fedmark audit export: ${errorMessage(err)}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`exported to ${opts.out}; verify with: fedmark audit verify ${opts.out}\n`);
      process.exitCode = 0;
    });
}
