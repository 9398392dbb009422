import { readFileSync } from 'node:fs';
import type { Command } from 'commander';

export interface AuditCommandDeps {
  /** Export through a running coordinator's HTTP API. */
  exportFromCoordinator?: (opts: { coordinator: string; token: string; out: string }) => Promise<void>;
  /** Export straight from the coordinator's database (PostgreSQL URL or embedded data folder). */
  exportFromDatabase?: (opts: { databaseUrl?: string; dataDir?: string; out: string; keyDir?: string; passphrase?: string }) => Promise<void>;
}

const errorMessage = (err: unknown) => (err instanceof Error ? err.message : String(err));
const collect = (value: string, previous: string[]) => [...previous, value];

/**
 * `fedmark audit verify <dir>` and `fedmark audit export --out DIR ...`.
 * Exit codes: 0 verified / exported, 1 verification failed or the export failed, 2 usage error.
 */
export function registerAuditCommands(program: Command, deps: AuditCommandDeps): void {
  const audit = program.command('audit').description('export the audit log, verify an export and report on a study offline');

  audit
    .command('verify')
    .description(
      'verify an audit export offline: hash chain, signed checkpoints (numbered, none missing, the last one covering the head), ' +
        "the coordinator's signature over manifest.json, and optionally the checkpoints nodes witnessed (positions are line numbers of entries.jsonl)",
    )
    .argument('<dir>', 'export folder')
    .option('--fingerprint <fpr>', 'the coordinator key fingerprint published by the operator; without it the key inside the export is trusted')
    .option('--witness <node-state-dir>', "a node's state folder: every checkpoint the node received with its tasks must be in the export, with the same head hash, and the export must extend the latest one (repeatable)", collect, [])
    .option('--allow-unsealed-tail', 'accept entries after the last signed checkpoint (reported with their count); by default they fail, since a tail cut with its checkpoints looks the same')
    .option('--allow-unsigned-manifest', 'accept a manifest.json without the coordinator signature (an export made straight from the database); then nothing proves the export is complete')
    .addHelpText(
      'after',
      '\nExit codes: 0 verified, 1 verification failed (the message names the entry seq or checkpoint number), 2 usage error.\n' +
        'Checks: every entry hashes to its recorded hash and links to the one before; every checkpoint is signed by the coordinator key\n' +
        '(or a key it rotated to by a signed entry), matches the chain, and checkpoints are numbered 1, 2, 3, ... without a gap;\n' +
        'the last checkpoint covers the last entry; manifest.json is signed by the coordinator and its counts, head and file hashes hold;\n' +
        "each --witness folder's checkpoints are in the export unchanged.",
    )
    .action(async (dir: string, opts: { fingerprint?: string; witness: string[]; allowUnsealedTail?: boolean; allowUnsignedManifest?: boolean }) => {
      const { verifyAuditExport } = await import('../protocols/audit/audit-export.ts');
      let result;
      try {
        result = await verifyAuditExport(dir, { expectedFingerprint: opts.fingerprint, allowUnsealedTail: opts.allowUnsealedTail, allowUnsignedManifest: opts.allowUnsignedManifest, witnesses: opts.witness });
      } catch (err) {
        process.stderr.write(`FAILED: cannot verify ${dir}: ${errorMessage(err)}\n`);
        process.exitCode = 1;
        return;
      }
      if (!result.ok) {
        const where = result.seq !== null ? ` at entry ${result.seq}` : '';
        process.stderr.write(`FAILED: ${result.problem}${where}: ${result.message}\n`);
        process.exitCode = 1;
        return;
      }
      const out = (line: string) => process.stdout.write(line + '\n');
      out(`OK: ${result.entries} entries, ${result.checkpoints} checkpoints, head ${result.head}`);
      out(`coordinator key ${result.coordinatorFingerprint}${opts.fingerprint ? ' (matches --fingerprint)' : ' (pass --fingerprint to check it against the published one)'}`);
      out(result.manifestSignedBy ? `manifest signed by ${result.manifestSignedBy} at ${result.exportedAt}` : 'manifest NOT signed (accepted with --allow-unsigned-manifest): nothing proves the export is complete');
      for (const w of result.witnesses) {
        out(`witness ${w.stateDir}: ${w.checkpoints} checkpoint${w.checkpoints === 1 ? '' : 's'} witnessed, all in the export${w.latestSeq !== null ? `; the export extends the latest (seq ${w.latestSeq}${w.latestNumber !== null ? `, #${w.latestNumber}` : ''})` : ''}`);
      }
      if (result.uncheckpointedEntries > 0) {
        const from = (result.lastCheckpointSeq ?? 0) + 1;
        out(
          `unsealed tail: ${result.uncheckpointedEntries} entr${result.uncheckpointedEntries === 1 ? 'y' : 'ies'} (seq ${from}..${result.entries}) after the last signed checkpoint, accepted with --allow-unsealed-tail; their deletion would not be detectable`,
        );
      }
      process.exitCode = 0;
    });

  audit
    .command('report')
    .description("a compliance officer's report of one study from an audit export, offline: per model version the contributing nodes (name, region, jurisdiction, policy version in force), the privacy spent and by which mechanism, the model hash and signer; refused rounds with reasons")
    .argument('<export>', 'export folder (fedmark audit export --out DIR)')
    .requiredOption('--study <id>', 'study id')
    .option('--version <v...>', 'only these model versions (default: all)')
    .option('--format <format>', 'md or html', 'md')
    .option('--out <file>', 'write the report to this file instead of stdout')
    .option('--fingerprint <fpr>', 'the coordinator key fingerprint published by the operator (checked as by audit verify)')
    .option('--allow-unsealed-tail', 'report on an export whose last entries are after the last signed checkpoint (said in the report)')
    .option('--allow-unsigned-manifest', 'report on an export made straight from the database without the coordinator signature (said in the report)')
    .option('--json', 'the structured report as JSON instead of md/html')
    .addHelpText('after', '\nThe export is verified first, as `fedmark audit verify` does; a report is refused (exit 1) when it does not verify.\nExit codes: 0 written, 1 verification failed or a version asked for is missing, 2 usage error.')
    .action(async (dir: string, opts: { study: string; version?: string[]; format: string; out?: string; fingerprint?: string; allowUnsealedTail?: boolean; allowUnsignedManifest?: boolean; json?: boolean }) => {
      if (opts.format !== 'md' && opts.format !== 'html') {
        process.stderr.write(`fedmark audit report: --format must be md or html, not ${opts.format}\n`);
        process.exitCode = 2;
        return;
      }
      const versions = opts.version?.map(Number);
      if (versions?.some((v) => !Number.isInteger(v) || v < 1)) {
        process.stderr.write(`fedmark audit report: --version takes model versions (positive integers), got ${opts.version!.join(' ')}\n`);
        process.exitCode = 2;
        return;
      }
      const { verifyAuditExport, readAuditExport } = await import('../protocols/audit/audit-export.ts');
      const { buildAuditReport, renderAuditReportHtml, renderAuditReportMarkdown } = await import('../protocols/audit/audit-report.ts');
      const result = await verifyAuditExport(dir, { expectedFingerprint: opts.fingerprint, allowUnsealedTail: opts.allowUnsealedTail, allowUnsignedManifest: opts.allowUnsignedManifest }).catch((err: unknown) => ({ ok: false as const, problem: 'unreadable', seq: null, message: errorMessage(err) }));
      if (!result.ok) {
        process.stderr.write(`FAILED: the export does not verify, so no report: ${result.problem}${result.seq !== null ? ` at entry ${result.seq}` : ''}: ${result.message}\n`);
        process.exitCode = 1;
        return;
      }
      const verification =
        `verified: ${result.entries} entries, ${result.checkpoints} signed checkpoints, head ${result.head}, coordinator key ${result.coordinatorFingerprint}` +
        (opts.fingerprint ? ' (matches the published fingerprint)' : ' (not checked against a published fingerprint)') +
        (result.manifestSignedBy ? `, manifest signed at ${result.exportedAt}` : ', manifest NOT signed: nothing proves the export is complete') +
        (result.uncheckpointedEntries > 0 ? `; ${result.uncheckpointedEntries} entries after the last checkpoint are not sealed` : '');
      const report = buildAuditReport(readAuditExport(dir).entries, { studyId: opts.study, versions });
      if (!report.createdAt && report.versions.length === 0) {
        process.stderr.write(`fedmark audit report: study ${opts.study} is not in this export\n`);
        process.exitCode = 1;
        return;
      }
      const text = opts.json ? JSON.stringify({ verification, ...report }, null, 2) + '\n' : opts.format === 'html' ? renderAuditReportHtml(report, { verification }) : renderAuditReportMarkdown(report, { verification });
      if (opts.out) {
        const { writeFileSync } = await import('node:fs');
        writeFileSync(opts.out, text);
        process.stdout.write(`report written to ${opts.out}\n`);
      } else process.stdout.write(text);
      if (report.missingVersions.length) {
        process.stderr.write(`fedmark audit report: version(s) ${report.missingVersions.join(', ')} not in this export\n`);
        process.exitCode = 1;
        return;
      }
      process.exitCode = 0;
    });

  audit
    .command('export')
    .description('export the audit log to a folder (from a running coordinator, or directly from its database)')
    .requiredOption('--out <dir>', 'output folder (must not already hold an export)')
    .option('--coordinator <url>', 'coordinator URL')
    .option('--token <token>', 'auditor API token for --coordinator (env FEDMARK_TOKEN; an admin token works too, and FEDMARK_ADMIN_TOKEN is the last fallback)')
    .option('--database-url <url>', 'the coordinator\'s PostgreSQL URL (opened read-only, never migrated: SELECT on audit_log, audit_checkpoints and coordinator_keys suffices)')
    .option('--data-dir <dir>', 'the coordinator\'s embedded database folder (stop the coordinator first: PGlite allows one process; never migrated)')
    .option('--key-dir <dir>', 'with --database-url or --data-dir: the coordinator\'s key folder (passphrase in FEDMARK_KEY_PASSPHRASE or FEDMARK_KEY_PASSPHRASE_FILE), to sign the manifest; refused when the database does not extend the head the coordinator signed last')
    .action(async (opts: { out: string; coordinator?: string; token?: string; databaseUrl?: string; dataDir?: string; keyDir?: string }) => {
      const usage = (message: string) => {
        process.stderr.write(`fedmark audit export: ${message}\n`);
        process.exitCode = 2;
      };
      const sources = [opts.coordinator && '--coordinator', opts.databaseUrl && '--database-url', opts.dataDir && '--data-dir'].filter(Boolean);
      if (sources.length !== 1) {
        usage(sources.length === 0 ? 'choose a source: --coordinator URL --token T, --database-url URL or --data-dir DIR' : `choose one source, not ${sources.join(' and ')}`);
        return;
      }
      if (opts.coordinator && opts.keyDir) return usage('--key-dir signs an export made from the database; an export through --coordinator is signed by the coordinator');
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
          const passphrase = process.env.FEDMARK_KEY_PASSPHRASE ?? (process.env.FEDMARK_KEY_PASSPHRASE_FILE ? readFileSync(process.env.FEDMARK_KEY_PASSPHRASE_FILE, 'utf8').trim() : undefined);
          await deps.exportFromDatabase({ databaseUrl: opts.databaseUrl, dataDir: opts.dataDir, out: opts.out, ...(opts.keyDir ? { keyDir: opts.keyDir, passphrase } : {}) });
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
