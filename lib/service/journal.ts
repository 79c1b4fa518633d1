/**
 * The daemon's journal (`physmem serve --state-dir DIR`): the table of live
 * blocks, kept in `DIR/journal.json` so that a daemon killed with -9 and
 * restarted still knows every block it handed out.
 *
 * An atomic snapshot rather than an append-only log: the table is small (at
 * most one entry per page of the pool, usually a few hundred), so rewriting
 * it whole (temp file, fsync, rename, fsync of the directory) costs about
 * what an fsync'd log record does, and there is no log to replay or compact:
 * the file on disk is always either the old table or the new one, never a
 * torn mix.
 * @module
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync, constants as fsConstants } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomFillSync } from 'node:crypto';
import { PhysmemError, hasCode } from '../errors.js';
import { NAME_PATTERN } from './protocol.js';

/** Format version of the journal file. */
export const JOURNAL_VERSION = 1;
/** Name of the journal file inside the state directory. */
export const JOURNAL_FILE = 'journal.json';
/** What a token looks like: 128 random bits in lowercase hex. */
export const TOKEN_PATTERN = /^[0-9a-f]{32}$/;

/** One live block as the journal keeps it. */
export interface JournalBlock {
  /** Physical address (decimal string). */
  phys: string;
  /** Bytes asked for. */
  size: number;
  /** The token returned with the allocation: whoever presents it may reclaim the block after a restart. */
  token: string;
  /** Owner's pid when journaled (for display only). */
  pid: number;
  /** For a named buffer: its name. */
  name?: string;
  /** True when the block was waiting out its quarantine (its client was gone): not reclaimable, released after the grace period. */
  quarantined?: boolean;
}

/** The journal's content. */
export interface JournalData {
  /** {@link JOURNAL_VERSION}. */
  version: number;
  /** The backend the blocks live in: a journal is only valid for the same memory. */
  backend: string;
  /** Total bytes of the pool (a different size means different memory: refused). */
  total: number;
  /** Live blocks. */
  blocks: JournalBlock[];
}

// Random bytes are drawn 4 KiB at a time: one randomBytes(16) call costs about 4.6 us here,
// a slice of a refilled pool about 0.2 us, and the daemon makes one token per allocation.
const tokenPool = Buffer.alloc(4096);
let tokenPos = tokenPool.length;

/** A fresh random token (128 bits from the CSPRNG, hex). */
export function newToken(): string {
  if (tokenPos === tokenPool.length) {
    randomFillSync(tokenPool);
    tokenPos = 0;
  }
  const t = tokenPool.toString('hex', tokenPos, tokenPos + 16);
  tokenPool.fill(0, tokenPos, tokenPos + 16); // a token is never left lying in memory twice
  tokenPos += 16;
  return t;
}

function corrupt(path: string, what: string): PhysmemError {
  return new PhysmemError('EIO', `the journal is unreadable: ${what}`, {
    path,
    hint: 'the daemon will not start without it (it would forget live blocks). Repair it, or move it away to start with an empty pool (every block it lists is then lost)',
  });
}

/**
 * Read and validate the journal at `path`.
 * @returns undefined when there is no journal file.
 * @throws {PhysmemError} EIO when it exists but cannot be read or is not a valid journal.
 */
export function readJournal(path: string): JournalData | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (hasCode(e, 'ENOENT')) return undefined;
    throw corrupt(path, `cannot read it (${(e as Error).message})`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw corrupt(path, 'not valid JSON');
  }
  const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (!isObj(v)) throw corrupt(path, 'not a JSON object');
  if (v.version !== JOURNAL_VERSION) throw corrupt(path, `version ${JSON.stringify(v.version)} is not ${JOURNAL_VERSION}`);
  if (typeof v.backend !== 'string') throw corrupt(path, 'backend is missing');
  if (typeof v.total !== 'number' || !Number.isSafeInteger(v.total) || v.total <= 0) throw corrupt(path, 'total is not a positive integer');
  if (!Array.isArray(v.blocks)) throw corrupt(path, 'blocks is not an array');
  const tokens = new Set<string>();
  const blocks: JournalBlock[] = [];
  for (const [i, b] of v.blocks.entries()) {
    const at = `block ${i}`;
    if (!isObj(b)) throw corrupt(path, `${at} is not an object`);
    if (typeof b.phys !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(b.phys) || !Number.isSafeInteger(Number(b.phys))) throw corrupt(path, `${at}: phys is not a decimal address`);
    if (typeof b.size !== 'number' || !Number.isSafeInteger(b.size) || b.size < 1) throw corrupt(path, `${at}: size is not a positive integer`);
    if (typeof b.token !== 'string' || !TOKEN_PATTERN.test(b.token)) throw corrupt(path, `${at}: token is not 32 hex digits`);
    if (tokens.has(b.token)) throw corrupt(path, `${at}: token appears twice`);
    tokens.add(b.token);
    if (typeof b.pid !== 'number' || !Number.isSafeInteger(b.pid) || b.pid < 0) throw corrupt(path, `${at}: pid is not an integer`);
    if (b.name !== undefined && (typeof b.name !== 'string' || !NAME_PATTERN.test(b.name))) throw corrupt(path, `${at}: name is not a valid buffer name`);
    if (b.quarantined !== undefined && typeof b.quarantined !== 'boolean') throw corrupt(path, `${at}: quarantined is not a boolean`);
    const out: JournalBlock = { phys: b.phys, size: b.size, token: b.token, pid: b.pid };
    if (b.name !== undefined) out.name = b.name;
    if (b.quarantined === true) out.quarantined = true;
    blocks.push(out);
  }
  return { version: JOURNAL_VERSION, backend: v.backend, total: v.total, blocks };
}

// Fault injection for the test suite only: PHYSMEM_TEST_JOURNAL_CRASH=<point>:<n> makes the n-th
// journal write of this process die with SIGKILL at <point>: `write` (half the snapshot written),
// `fsync` (all written, not synced), `rename` (synced, not renamed) or `dirsync` (renamed, directory
// not synced). Read once; no test sets it in the daemon it runs in process.
const crashAt = /^(write|fsync|rename|dirsync):([1-9][0-9]*)$/.exec(process.env.PHYSMEM_TEST_JOURNAL_CRASH ?? '');
let writes = 0;

function crashPoint(point: string): void {
  if (crashAt !== null && crashAt[1] === point && writes === Number(crashAt[2])) process.kill(process.pid, 'SIGKILL');
}

/**
 * Write all of `data` at the start of `fd`: write(2) may take less than it is given (a nearly
 * full file system takes what fits, then fails with ENOSPC), so loop until every byte is in.
 * @throws the file system's error (ENOSPC, EIO, ...).
 */
function writeAll(fd: number, data: Buffer): void {
  let off = 0;
  while (off < data.length) {
    const n = writeSync(fd, data, off, data.length - off, off);
    if (n <= 0) throw new PhysmemError('EIO', `write took ${n} bytes`);
    off += n;
  }
}

/**
 * Replace the journal at `path` with `data`, atomically and durably: write a
 * temp file completely (short writes are continued, never ignored), fsync it,
 * rename it over the journal, fsync the directory (so the rename itself
 * survives a power cut). Only when this returns is the new table on disk; if
 * it throws, the journal is the old table (or, when only the directory fsync
 * failed, possibly the new one: either is a complete table), and the temp file
 * is removed.
 * @throws {PhysmemError} EIO (or the file system's code, e.g. ENOSPC) saying what failed.
 */
export function writeJournal(path: string, data: JournalData): void {
  writes++;
  const tmp = `${path}.tmp`;
  const bytes = Buffer.from(JSON.stringify(data), 'utf8');
  let step = 'open';
  try {
    const fd = openSync(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_NOFOLLOW, 0o600);
    try {
      step = 'write';
      if (crashAt?.[1] === 'write' && writes === Number(crashAt[2])) {
        writeAll(fd, bytes.subarray(0, bytes.length >> 1));
        crashPoint('write');
      }
      writeAll(fd, bytes);
      crashPoint('fsync');
      step = 'fsync';
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    crashPoint('rename');
    step = 'rename';
    renameSync(tmp, path);
  } catch (e) {
    // The old journal is untouched; give back the space the torn temp file holds.
    try {
      unlinkSync(tmp);
    } catch {
      /* not created, or already renamed */
    }
    throw journalError(path, step, e);
  }
  crashPoint('dirsync');
  try {
    const dfd = openSync(dirname(path), fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch (e) {
    throw journalError(path, 'fsync of the directory', e);
  }
}

function journalError(path: string, step: string, e: unknown): PhysmemError {
  const code = hasCode(e, 'ENOSPC') ? 'ENOSPC' : hasCode(e, 'EDQUOT') ? 'EDQUOT' : hasCode(e, 'EROFS') ? 'EROFS' : 'EIO';
  return new PhysmemError(code, `cannot write the journal (${step}): ${(e as Error)?.message ?? String(e)}`, {
    path,
    hint: 'check the --state-dir file system (full? read-only?); the journal on disk still holds a complete table',
  });
}

/** Path of the journal inside state directory `dir`. */
export function journalPath(dir: string): string {
  return join(dir, JOURNAL_FILE);
}
