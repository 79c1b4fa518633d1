/**
 * Errors shaped like Node's fs errors: `code`, `errno`, `syscall`, `path`,
 * and a message `CODE: description, syscall 'path'` followed by what to do.
 *
 * Compare on `code` (a string such as `'EINVAL'`), never on `errno`.
 * @module
 */
import { constants as osConstants } from 'node:os';

const ERRNO_BY_CODE = osConstants.errno as Readonly<Record<string, number>>;
const CODE_BY_ERRNO = new Map<number, string>();
for (const [code, n] of Object.entries(ERRNO_BY_CODE)) {
  if (!CODE_BY_ERRNO.has(n)) CODE_BY_ERRNO.set(n, code);
}

// The wording libuv uses for the codes we meet, so messages read like Node's.
const DESCRIPTIONS: Readonly<Record<string, string>> = {
  EPERM: 'operation not permitted',
  ENOENT: 'no such file or directory',
  EIO: 'i/o error',
  ENXIO: 'no such device or address',
  EBADF: 'bad file descriptor',
  EAGAIN: 'resource temporarily unavailable',
  ENOMEM: 'not enough memory',
  EACCES: 'permission denied',
  EFAULT: 'bad address in system call argument',
  EBUSY: 'resource busy or locked',
  EEXIST: 'file already exists',
  ENODEV: 'no such device',
  ENOTDIR: 'not a directory',
  EISDIR: 'illegal operation on a directory',
  EINVAL: 'invalid argument',
  EMFILE: 'too many open files',
  ENOSPC: 'no space left on device',
  ERANGE: 'result too large',
  ENOSYS: 'function not implemented',
  ENOTSUP: 'operation not supported',
  EOVERFLOW: 'value too large for defined data type',
  ETIMEDOUT: 'operation timed out',
  ECANCELED: 'operation canceled',
  ECONNREFUSED: 'connection refused',
  EPROTO: 'protocol error',
};

/** Fields a {@link PhysmemError} can carry besides its code. */
export interface PhysmemErrorFields {
  /** The system call that failed, e.g. `'open'`, `'mmap'`. */
  syscall?: string;
  /** The file involved, e.g. `'/dev/mem'`. */
  path?: string;
  /** What the user can do about it; appended to the message. */
  hint?: string;
  /** The underlying error, if any. */
  cause?: unknown;
}

/**
 * The one error class of physmem. Every failure the library reports on
 * purpose is a `PhysmemError` with a POSIX-style `code`.
 *
 * `errno` is negative, as in Node's own errors (`-13` for EACCES); it is
 * informational: compare `code`.
 */
export class PhysmemError extends Error {
  /** POSIX-style code: `'EINVAL'`, `'ENOMEM'`, `'EACCES'`, `'EPERM'`, ... */
  readonly code: string;
  /** Negative errno matching `code` (e.g. `-22`), as in Node's errors. */
  readonly errno: number;
  /** The system call that failed, when one did. */
  readonly syscall?: string;
  /** The path involved, when there is one. */
  readonly path?: string;

  /**
   * @param code - a code from `os.constants.errno` (e.g. `'EINVAL'`).
   * @param detail - what failed, in a few words (e.g. `"size must be > 0, got 0"`).
   * @param fields - syscall, path, hint (what to do) and cause.
   */
  constructor(code: string, detail: string, fields: PhysmemErrorFields = {}) {
    super(formatMessage(code, detail, fields), fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = 'PhysmemError';
    this.code = code;
    this.errno = -(ERRNO_BY_CODE[code] ?? 0);
    if (fields.syscall !== undefined) this.syscall = fields.syscall;
    if (fields.path !== undefined) this.path = fields.path;
  }
}

function formatMessage(code: string, detail: string, f: PhysmemErrorFields): string {
  let msg = `${code}: ${detail}`;
  if (f.syscall !== undefined) msg += `, ${f.syscall}`;
  if (f.path !== undefined) msg += ` '${f.path}'`;
  // A detail that ends a sentence itself ("did you mean 'align'?") takes no second stop.
  if (f.hint) msg += `${/[.?!]$/.test(msg) ? '' : '.'} ${f.hint}`;
  return msg;
}

/** The code (`'EACCES'`) for a positive or negative errno number; `'UNKNOWN'` otherwise. */
export function codeOfErrno(errno: number): string {
  return CODE_BY_ERRNO.get(Math.abs(errno)) ?? 'UNKNOWN';
}

/** libuv's description of a code (`'permission denied'`), or the code itself. */
export function describeCode(code: string): string {
  return DESCRIPTIONS[code] ?? code.toLowerCase();
}

/**
 * Build an fs-style error from an errno returned by a system call:
 * `EACCES: permission denied, open '/dev/mem'. Run as root ...`.
 * @param errno - positive or negative errno.
 * @param syscall - the call that failed.
 * @param path - the file involved, if any.
 * @param hint - what to do about it.
 */
export function fromErrno(errno: number, syscall: string, path?: string, hint?: string): PhysmemError {
  const code = codeOfErrno(errno);
  return new PhysmemError(code, describeCode(code), { syscall, path, hint });
}

/** Shorthand for an EINVAL error about a bad argument. */
export function invalidArgument(detail: string, hint?: string): PhysmemError {
  return new PhysmemError('EINVAL', detail, { hint });
}

/** True when `e` is a PhysmemError (or any error) with the given code. */
export function hasCode(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: unknown }).code === code;
}
