import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Every test file gets its own node privacy-ledger folder (inherited by the node processes it
 * spawns). The shared ledger's default is ~/.fedmark/ledgers, keyed by the data file's path: runs
 * of the suite would otherwise add up their spending there, and a test's ceiling would depend on
 * the runs before it.
 */
process.env.FEDMARK_NODE_LEDGER_DIR = mkdtempSync(join(tmpdir(), 'fedmark-ledgers-'));
