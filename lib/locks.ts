/**
 * Exclusive region locks: two programs must never hand out the same memory.
 *
 * A process that owns memory (a pool in linked mode, later the `physmem serve`
 * daemon) locks each range it uses in a lock file named after what the memory
 * is: `devmem.lock` for physical memory through /dev/mem, `udmabuf-<name>.lock`
 * for a u-dma-buf device, `fake-<key>.lock` for a fake pool given a `lockKey`.
 * A lock is a POSIX record lock (fcntl F_SETLK) on the bytes of the lock file
 * whose offsets are the memory's addresses, so:
 *
 * - overlap, not equality, conflicts (the kernel compares the ranges);
 * - the kernel names the holder's pid, shown with its command line;
 * - locks die with the process, even on SIGKILL: nothing is ever left stale.
 *
 * Within one process (every worker thread included) overlapping ranges are
 * refused too (POSIX locks never conflict within a process); the native addon
 * keeps that table and one fd per lock file (see `lockFileOpen` in native.ts).
 *
 * The lock directory defaults to `/run/physmem` (or `$PHYSMEM_LOCK_DIR`). It
 * is created mode 0755 and refused when it is a symbolic link, not a directory,
 * owned by neither root nor this user, or writable by group or others without
 * the sticky bit: anyone who could delete a lock file could take memory in use.
 *
 * Listing ({@link listRegionLocks}) reads `/proc/locks` and never opens a lock
 * file, so it needs neither root nor the native addon.
 * @module
 */
import { chmodSync, lstatSync, mkdirSync, readFileSync, readdirSync, realpathSync, type BigIntStats, type Stats } from 'node:fs';
import { join, resolve } from 'node:path';
import { PhysmemError, invalidArgument } from './errors.js';
import { native, toPhysmemError } from './native.js';
import { checkPath, describeValue, hex, isArray, optionNames, optionsChecker } from './internal/validate.js';

/** The lock directory when neither the option nor `$PHYSMEM_LOCK_DIR` says otherwise. */
export const DEFAULT_LOCK_DIR = '/run/physmem';
/** Environment variable naming the lock directory. */
export const LOCK_DIR_ENV = 'PHYSMEM_LOCK_DIR';
/** Lock kind of physical memory reached through /dev/mem (the devmem backend). */
export const DEVMEM_LOCK_KIND = 'devmem';
/** How to share memory instead of opening it twice; part of every EBUSY message about another program. */
export const SHARE_HINT = 'to share memory between programs, run `physmem serve` and connect with `openPool({ service })`';

const KIND_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const OFF_MAX = (1n << 63n) - 1n;

/** Lock kind of a fake pool opened with `lockKey: key`: `fake-<key>`. @throws {PhysmemError} EINVAL for a key that is not a plain name. */
export function fakeLockKind(key: string): string {
  return checkKind(`fake-${checkName(key, 'lockKey')}`);
}

/** Lock kind of a u-dma-buf device (`udmabuf0`): `udmabuf-<name>`. @throws {PhysmemError} EINVAL for a name that is not a plain name. */
export function udmabufLockKind(name: string): string {
  return checkKind(`udmabuf-${checkName(name, 'device name')}`);
}

function checkName(name: unknown, what: string): string {
  if (typeof name !== 'string' || !/^[A-Za-z0-9._-]{1,100}$/.test(name)) {
    throw invalidArgument(`${what} must be 1-100 letters, digits, '.', '_' or '-', got ${JSON.stringify(name)}`);
  }
  return name;
}

function checkKind(kind: unknown): string {
  if (typeof kind !== 'string' || !KIND_RE.test(kind)) {
    throw invalidArgument(`lock kind must be letters, digits, '.', '_' or '-' (not starting with '.' or '-'), at most 128, got ${JSON.stringify(kind)}`);
  }
  return kind;
}

/**
 * The lock directory to use: `dir` if given, else `$PHYSMEM_LOCK_DIR` if set
 * and non-empty, else {@link DEFAULT_LOCK_DIR}; made absolute. Nothing is created.
 * @throws {PhysmemError} EINVAL when `dir` is not a non-empty string.
 */
export function resolveLockDir(dir?: string): string {
  if (dir !== undefined && (typeof dir !== 'string' || dir === '')) throw invalidArgument(`lockDir must be a non-empty path, got ${describeValue(dir)}`);
  return resolve(dir ?? (process.env[LOCK_DIR_ENV] || DEFAULT_LOCK_DIR));
}

const OWN_DIR_HINT = `set lockDir (or ${LOCK_DIR_ENV}) to a directory of your own`;

function euid(): number {
  return process.geteuid?.() ?? process.getuid?.() ?? 0;
}

/** Why `st` (from lstat of `path`) is no safe lock directory, or undefined. */
function lockDirProblem(path: string, st: Stats | BigIntStats): PhysmemError | undefined {
  if (st.isSymbolicLink()) {
    return new PhysmemError('ELOOP', `lock directory '${path}' is a symbolic link`, {
      hint: `refusing it, since a link can send the locks anywhere: use the directory it points to, or remove the link; or ${OWN_DIR_HINT}`,
    });
  }
  if (!st.isDirectory()) return new PhysmemError('ENOTDIR', `lock directory '${path}' is not a directory`, { hint: `remove it, or ${OWN_DIR_HINT}` });
  const uid = Number(st.uid);
  if (uid !== 0 && uid !== euid()) {
    return new PhysmemError('EPERM', `lock directory '${path}' is owned by uid ${uid}, neither root nor this user (uid ${euid()})`, {
      hint: `its owner could delete lock files and take memory in use: chown root it, or ${OWN_DIR_HINT}`,
    });
  }
  const mode = Number(st.mode);
  if ((mode & 0o022) !== 0 && (mode & 0o1000) === 0) {
    return new PhysmemError('EPERM', `lock directory '${path}' is writable by group or others (mode ${(mode & 0o7777).toString(8)}) without the sticky bit`, {
      hint: `anyone could delete a lock file and take memory in use: chmod 755 it (or 1777), or ${OWN_DIR_HINT}`,
    });
  }
  return undefined;
}

/**
 * Create the lock directory if missing (mode 0755, only its last component)
 * and check it is safe to use; see the module comment.
 * @param dir - default: {@link resolveLockDir}.
 * @returns its canonical path (symbolic links in its parents resolved).
 * @throws {PhysmemError} ELOOP (a symbolic link), ENOTDIR, EPERM (owner or mode unsafe),
 *   ENOENT (its parent is missing), EACCES / EROFS (cannot create it), each saying what to do.
 */
export function prepareLockDir(dir?: string): string {
  const path = resolveLockDir(dir);
  let st: Stats | undefined;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw toPhysmemError(e, path);
  }
  if (st === undefined) {
    let created = false;
    try {
      mkdirSync(path, { mode: 0o755 });
      created = true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') {
        const hint =
          code === 'ENOENT'
            ? `its parent directory does not exist: create it, or ${OWN_DIR_HINT}`
            : code === 'EACCES' || code === 'EPERM'
              ? `creating it needs root: run as root, or ${OWN_DIR_HINT}`
              : code === 'EROFS'
                ? `the file system is read-only: ${OWN_DIR_HINT} (a tmpfs such as /run)`
                : OWN_DIR_HINT;
        throw toPhysmemError(e, path, hint);
      }
    }
    // mkdir's mode is masked by the umask; other users must read the directory to list it.
    if (created) chmodSync(path, 0o755);
    st = lstatSync(path);
  }
  const problem = lockDirProblem(path, st);
  if (problem) throw problem;
  return realpathSync(path);
}

/** A range to lock: addresses (bytes) as bigints or safe-integer numbers. */
export interface LockRangeInput {
  /** First address, bytes. */
  start: bigint | number;
  /** Length in bytes, > 0. */
  size: bigint | number;
}

/** A locked range, addresses in bytes. */
export interface LockedRange {
  /** First address. */
  readonly start: bigint;
  /** Length in bytes. */
  readonly size: bigint;
}

/** Options of {@link lockRegion}. */
export interface LockRegionOptions {
  /** Lock directory. Default: `$PHYSMEM_LOCK_DIR`, else {@link DEFAULT_LOCK_DIR}. */
  dir?: string;
}

const checkLockRegionOptions = optionsChecker('lockRegion()', optionNames<LockRegionOptions>({ dir: true }));

/**
 * Exclusive locks on ranges of one kind of memory, held by this process until
 * {@link RegionLock.release} or exit. Made by {@link lockRegion}.
 */
export class RegionLock {
  /** What the memory is (`devmem`, `fake-<key>`, ...): the lock file is `<kind>.lock`. */
  readonly kind: string;
  /** The lock file. */
  readonly path: string;
  /** The ranges held, ascending. */
  readonly ranges: readonly LockedRange[];
  #fd: number;

  /** @internal Made by {@link lockRegion}. */
  constructor(kind: string, path: string, ranges: readonly LockedRange[], fd: number) {
    this.kind = kind;
    this.path = path;
    this.ranges = ranges;
    this.#fd = fd;
  }

  /** True once released. */
  get released(): boolean {
    return this.#fd < 0;
  }

  /** Release every range, so another program (or pool) can take it. Idempotent; never throws. */
  release(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    releaseRanges(fd, this.ranges);
  }
}

function releaseRanges(fd: number, ranges: readonly LockedRange[]): void {
  const n = native();
  for (const r of ranges) {
    try {
      n.unlockRange(fd, r.start, r.size);
    } catch {
      /* closing the file below drops it anyway once no one else holds it */
    }
  }
  try {
    n.lockFileClose(fd);
  } catch {
    /* not open: nothing held */
  }
}

function toBig(v: unknown, what: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v);
  throw invalidArgument(`${what} must be a bigint or a safe integer number, got ${String(v)}`);
}

/**
 * `pid 1234 (node server.js --port 9)`, `this process (pid 1234)`, or what is
 * known when /proc/<pid>/cmdline cannot be read.
 * @param pid - a pid as the kernel reported it; <= 0 means not visible from here.
 */
export function describeHolder(pid: number): string {
  if (pid === process.pid) return `this process (pid ${pid})`;
  if (!(pid > 0)) return 'a process not visible from here (another PID namespace?)';
  const cmd = readCommandLine(pid);
  return cmd === undefined ? `pid ${pid} (command line not readable)` : `pid ${pid} (${cmd})`;
}

/**
 * The command line of `pid` from /proc/<pid>/cmdline, arguments joined by
 * spaces, cut at 200 characters; undefined when unreadable or empty.
 */
export function readCommandLine(pid: number): string | undefined {
  let raw: string;
  try {
    raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return undefined;
  }
  const cmd = raw.split('\0').filter((a, i, all) => a !== '' || i < all.length - 1).join(' ').trim();
  if (cmd === '') return undefined;
  return cmd.length > 200 ? cmd.slice(0, 199) + '…' : cmd;
}

function busyError(kind: string, file: string, want: LockedRange, held: { pid: number; start: bigint; length: bigint }): PhysmemError {
  const heldEnd = held.length === 0n ? 'the end' : hex(held.start + held.length - 1n);
  const detail =
    `${kind} memory ${hex(want.start)}-${hex(want.start + want.size - 1n)} is in use by ${describeHolder(held.pid)}, ` +
    `which holds ${hex(held.start)}-${heldEnd}`;
  const hint =
    held.pid === process.pid
      ? 'another pool (or backend) of this process already owns it: allocate from that pool, or close it first'
      : `two programs must never hand out the same memory: stop that program, or use memory that does not overlap; ${SHARE_HINT}`;
  return new PhysmemError('EBUSY', detail, { syscall: 'fcntl', path: file, hint });
}

function lockFileHint(code: string): string | undefined {
  switch (code) {
    case 'ELOOP':
      return 'the lock file is a symbolic link: remove it (no program holds a lock through a link)';
    case 'EPERM':
      return `if no program uses it, remove it; or ${OWN_DIR_HINT}`;
    case 'EACCES':
      return `locking this memory needs write access to its lock file: run as root, or ${OWN_DIR_HINT}`;
    case 'EROFS':
      return `the lock directory is read-only: ${OWN_DIR_HINT} (a tmpfs such as /run)`;
    case 'ENOLCK':
      return `the lock directory's file system has no POSIX record locks: ${OWN_DIR_HINT} (a tmpfs such as /run)`;
    default:
      return undefined;
  }
}

/**
 * Take exclusive locks on `ranges` of the memory called `kind`, all or none.
 * Never waits. The daemon of the standalone mode takes the same locks, so
 * linked-mode pools and the daemon exclude each other.
 *
 * @param kind - what the memory is: {@link DEVMEM_LOCK_KIND}, {@link fakeLockKind}(key),
 *   {@link udmabufLockKind}(name); the lock file is `<dir>/<kind>.lock`.
 * @param ranges - non-empty, disjoint; addresses in bytes, start + size <= 2^63 - 1.
 * @param options - `dir`: the lock directory (created if missing; see {@link prepareLockDir}).
 * @returns the lock; release it with {@link RegionLock.release} (it also dies with the process).
 * @throws {PhysmemError} EBUSY when another process, or another pool of this one,
 *   holds an overlapping range: the message names the holder (pid and command
 *   line) and how to share instead; EINVAL for bad arguments; the errors of
 *   {@link prepareLockDir}; EPERM / ELOOP for an unsafe lock file.
 * @example
 * const lock = lockRegion('devmem', [{ start: 0x18000000n, size: 0x4000000n }]);
 * try { ... } finally { lock.release(); }
 */
export function lockRegion(kind: string, ranges: readonly LockRangeInput[], options: LockRegionOptions = {}): RegionLock {
  checkLockRegionOptions(options);
  checkKind(kind);
  if (!isArray(ranges) || ranges.length === 0) throw invalidArgument('ranges must be a non-empty array of { start, size }');
  const want: LockedRange[] = ranges.map((r, i) => {
    if (typeof r !== 'object' || r === null) throw invalidArgument(`ranges[${i}] must be { start, size }`);
    const start = toBig(r.start, `ranges[${i}].start`);
    const size = toBig(r.size, `ranges[${i}].size`);
    if (start < 0n || size <= 0n || start + size - 1n > OFF_MAX) {
      throw invalidArgument(`ranges[${i}] must have start >= 0, size > 0 and end below 2^63, got start ${String(start)} size ${String(size)}`);
    }
    return { start, size };
  });
  want.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  for (let i = 1; i < want.length; i++) {
    if (want[i - 1].start + want[i - 1].size > want[i].start) throw invalidArgument('ranges to lock overlap each other');
  }
  const dir = prepareLockDir(options.dir);
  const file = join(dir, `${kind}.lock`);
  const n = native();
  let fd: number;
  try {
    fd = n.lockFileOpen(file);
  } catch (e) {
    const err = toPhysmemError(e, file);
    throw err instanceof PhysmemError ? toPhysmemError(e, file, lockFileHint(err.code)) : err;
  }
  const taken: LockedRange[] = [];
  try {
    for (const r of want) {
      const held = n.lockRange(fd, r.start, r.size);
      if (held !== null) throw busyError(kind, file, r, held);
      taken.push(r);
    }
  } catch (e) {
    releaseRanges(fd, taken);
    throw toPhysmemError(e, file, undefined);
  }
  return new RegionLock(kind, file, Object.freeze(want), fd);
}

/** One POSIX lock from /proc/locks. */
export interface ProcLock {
  /** Holder's pid as /proc shows it; 0 or -1 when not visible here. */
  pid: number;
  /** `'READ'` or `'WRITE'`. */
  type: string;
  /** Device (major, minor) and inode of the locked file. */
  major: number;
  /** See `major`. */
  minor: number;
  /** Inode number of the locked file. */
  inode: bigint;
  /** First byte locked. */
  start: bigint;
  /** Last byte locked (inclusive); undefined: to the end of the file. */
  end: bigint | undefined;
}

/**
 * Parse /proc/locks (`1: POSIX  ADVISORY  WRITE 1234 fe:00:2146628 0 1023`):
 * the POSIX record locks held (not waiting ones, not flock or OFD locks).
 */
export function parseProcLocks(text: string): ProcLock[] {
  const out: ProcLock[] = [];
  for (const line of text.split('\n')) {
    const m = /^\d+:\s+POSIX\s+\S+\s+(READ|WRITE)\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s+(\d+)\s+(\d+|EOF)\s*$/.exec(line);
    if (!m) continue;
    out.push({
      type: m[1],
      pid: Number(m[2]),
      major: parseInt(m[3], 16),
      minor: parseInt(m[4], 16),
      inode: BigInt(m[5]),
      start: BigInt(m[6]),
      end: m[7] === 'EOF' ? undefined : BigInt(m[7]),
    });
  }
  return out;
}

/** A range someone holds, from {@link listRegionLocks}. */
export interface RegionHolder {
  /** What the memory is (the lock file's name without `.lock`). */
  kind: string;
  /** The lock file. */
  lockFile: string;
  /** First address held. */
  start: bigint;
  /** Bytes held; undefined: to the end (not a lock physmem takes). Adjacent ranges of one process show as one. */
  size: bigint | undefined;
  /** Holder's pid; undefined when not visible from here (another PID namespace). */
  pid: number | undefined;
  /** Holder's command line, when readable. */
  command: string | undefined;
  /** True when the holder is this process. */
  self: boolean;
}

/** Result of {@link listRegionLocks}. */
export interface RegionLockList {
  /** The lock directory looked at. */
  dir: string;
  /** Held ranges, by kind then address. */
  holders: RegionHolder[];
  /** Why the list may be incomplete or untrustworthy (unsafe directory, /proc/locks unreadable). */
  problems: string[];
}

/** Options of {@link listRegionLocks}. */
export interface ListRegionLocksOptions {
  /** Lock directory. Default: `$PHYSMEM_LOCK_DIR`, else {@link DEFAULT_LOCK_DIR}. */
  dir?: string;
  /** Where the kernel lists locks. Default `/proc/locks`. */
  procLocks?: string;
}

const checkListOptions = optionsChecker('listRegionLocks()', optionNames<ListRegionLocksOptions>({ dir: true, procLocks: true }));

/**
 * Which ranges are locked in the lock directory, and by whom (pid, command
 * line). Reads only the directory and /proc/locks: opens no lock file (which
 * would drop this process's own locks on it), creates nothing, needs neither
 * root nor the native addon. A missing directory means nothing is in use.
 * @throws {PhysmemError} EINVAL for a bad `dir`; problems reading are reported in `problems`.
 */
export function listRegionLocks(options: ListRegionLocksOptions = {}): RegionLockList {
  checkListOptions(options);
  checkPath(options.procLocks, 'procLocks', 'listRegionLocks()');
  const dir = resolveLockDir(options.dir);
  const out: RegionLockList = { dir, holders: [], problems: [] };
  let st: Stats;
  try {
    st = lstatSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') out.problems.push(`cannot read lock directory ${dir}: ${(e as Error).message}`);
    return out;
  }
  const problem = lockDirProblem(dir, st);
  if (problem) {
    out.problems.push(problem.message);
    if (!st.isDirectory()) return out;
  }
  const files = new Map<string, { kind: string; path: string }>();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    out.problems.push(`cannot list lock directory ${dir}: ${(e as Error).message}`);
    return out;
  }
  for (const name of names) {
    if (!name.endsWith('.lock')) continue;
    const path = join(dir, name);
    let s: BigIntStats;
    try {
      s = lstatSync(path, { bigint: true });
    } catch {
      continue; // removed meanwhile
    }
    if (!s.isFile()) continue;
    // glibc's dev_t encoding, as Node reports it.
    const major = Number(((s.dev >> 8n) & 0xfffn) | ((s.dev >> 32n) & ~0xfffn));
    const minor = Number((s.dev & 0xffn) | ((s.dev >> 12n) & ~0xffn));
    files.set(`${major}:${minor}:${s.ino}`, { kind: name.slice(0, -'.lock'.length), path });
  }
  if (files.size === 0) return out;
  const procLocks = options.procLocks ?? '/proc/locks';
  let text: string;
  try {
    text = readFileSync(procLocks, 'utf8');
  } catch (e) {
    out.problems.push(`cannot read ${procLocks} (${(e as NodeJS.ErrnoException).code ?? 'error'}): which programs hold the locks in ${dir} is unknown`);
    return out;
  }
  const commands = new Map<number, string | undefined>();
  for (const l of parseProcLocks(text)) {
    const f = files.get(`${l.major}:${l.minor}:${l.inode}`);
    if (!f) continue;
    const pid = l.pid > 0 ? l.pid : undefined;
    if (pid !== undefined && !commands.has(pid)) commands.set(pid, readCommandLine(pid));
    out.holders.push({
      kind: f.kind,
      lockFile: f.path,
      start: l.start,
      size: l.end === undefined ? undefined : l.end - l.start + 1n,
      pid,
      command: pid === undefined ? undefined : commands.get(pid),
      self: pid === process.pid,
    });
  }
  out.holders.sort((a, b) => (a.kind !== b.kind ? (a.kind < b.kind ? -1 : 1) : a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  return out;
}
