/**
 * The wire protocol between a physmem daemon (`physmem serve`) and its
 * clients: length-prefixed frames.
 *
 * ```
 * | u32 big-endian: length L of what follows (1..MAX_FRAME) | u8 version | L-1 bytes of body |
 * ```
 *
 * A body is either UTF-8 JSON (every request and reply may be JSON: easy to
 * read and to write by hand), or one of four fixed binary layouts for the
 * hot path, told apart by the first byte, which JSON text never starts with:
 *
 * ```
 * ALLOC  (0x01, request, 24 + n bytes, little-endian)
 *   0 u8 type | 1 u8 flags (bit 0 wait, bit 1 timeoutMs given) | 2 u8 name length n (0..64) | 3 u8 0
 *   4 u32 id | 8 f64 size | 16 u32 align (0 = default) | 20 u32 timeoutMs | 24 n bytes name
 * FREE   (0x02, request, 16 bytes)
 *   0 u8 type | 1..3 0 | 4 u32 id | 8 u32 phys low | 12 u32 phys high
 * BLOCK  (0x81, reply to a binary ALLOC, 56 + n bytes)
 *   0 u8 type | 1 u8 name length n | 2..3 0 | 4 u32 id | 8 u64 phys | 16 u64 bus | 24 u64 file offset
 *   32 f64 size | 40 16 bytes token | 56 n bytes name        (each u64 as u32 low, u32 high)
 * DONE   (0x82, reply to a binary FREE, 8 bytes)
 *   0 u8 type | 1..3 0 | 4 u32 id
 * ```
 *
 * Errors are always JSON replies. The binary forms exist because one
 * JSON.stringify + JSON.parse costs about 1.1 us per message here, and
 * an alloc+free pair is four messages.
 *
 * The framing (length, version, maximum size) is checked before any
 * parsing, so a peer cannot make the other side buffer without bound, and
 * every field is then validated by hand. In JSON, addresses travel as decimal
 * strings (they may exceed 2^53 on the bus side).
 *
 * Decoders never throw on their input: they return typed results, and a
 * framing error ends the stream ({@link DecodeResult} `fatal`), because after
 * a bad length the next frame boundary is unknown.
 * @module
 */

import { PhysmemError } from '../errors.js';
import type { BackendName } from '../backends/types.js';
import type { PoolStats } from '../pool.js';
import { hex, isPowerOfTwo, MAX_TIMEOUT_MS } from '../internal/validate.js';

/** Protocol version carried in every frame. A daemon refuses other versions. */
export const PROTOCOL_VERSION = 2;
/** Largest frame (version byte + JSON) in bytes; anything longer is a framing error. */
export const MAX_FRAME = 64 * 1024;
/** Largest request or client-chosen id. */
export const MAX_ID = 0xffff_ffff;
/** Largest allocation size the protocol carries (bytes). */
export const MAX_SIZE = Number.MAX_SAFE_INTEGER;

/** `hello`: first request of a connection; the reply says where the memory is. */
export interface HelloRequest { op: 'hello'; id: number }
/** `alloc`: allocate `size` bytes; `wait` queues FIFO (GFP_KERNEL) up to `timeoutMs`; `name` makes it a named buffer others can `lookup`. */
export interface AllocRequest {
  op: 'alloc';
  id: number;
  /** It came as a binary ALLOC frame, so its reply is a binary BLOCK frame. */
  binary?: boolean;
  size: number;
  align?: number;
  wait?: boolean;
  timeoutMs?: number;
  name?: string;
}
/** `lookup`: attach the named buffer `name` (one more holder). */
export interface LookupRequest { op: 'lookup'; id: number; name: string }
/** `free`: free the caller's own block starting at physical `phys`. */
export interface FreeRequest {
  op: 'free';
  id: number;
  /** Physical address of the block's first byte. */
  phys: bigint;
  /** It came as a binary FREE frame, so its reply is a binary DONE frame. */
  binary?: boolean;
}
/** `cancel`: give up the waiting `alloc` whose id is `target` (it fails with ECANCELED). */
export interface CancelRequest { op: 'cancel'; id: number; target: number }
/** `stats`: pool usage. */
export interface StatsRequest { op: 'stats'; id: number }
/** `list`: blocks; every client's for root or the daemon's own user, the caller's own otherwise. */
export interface ListRequest { op: 'list'; id: number }
/** `check`: run the daemon allocator's invariant check (EIO reply on corruption). */
export interface CheckRequest { op: 'check'; id: number }
/** `reclaim`: after a daemon restart, take back the blocks these tokens were returned with (all or none: ENOENT if one is unknown). */
export interface ReclaimRequest { op: 'reclaim'; id: number; tokens: string[] }

/** Most tokens in one `reclaim` (keeps the reply inside one frame). */
export const MAX_RECLAIM = 128;

/** Every request a client may send. */
export type Request = HelloRequest | AllocRequest | LookupRequest | FreeRequest | CancelRequest | StatsRequest | ListRequest | CheckRequest | ReclaimRequest;

/** What a buffer name may be: 1 to 64 of A-Z a-z 0-9 . _ - */
export const NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

/** One block as the daemon reports it (`list`, status). */
export interface ServiceBlock {
  /** Physical address (decimal string: JSON-safe). */
  phys: string;
  /** Bytes asked for. */
  size: number;
  /** Owning client id. */
  client: number;
  /** Owner's pid. */
  pid: number;
  /** True when its client is gone and the block waits out the quarantine. */
  quarantined: boolean;
  /** For a named buffer: its name. */
  name?: string;
  /** For a named buffer: the client ids holding it (`client` is the first); in `list` replies at most 32 of them. */
  holders?: number[];
  /** For a named buffer whose `holders` were cut in a `list` reply: how many hold it. */
  holderCount?: number;
  /** True for a block restored from the journal that no client has reclaimed yet (`client` is 0, `pid` its old owner's). */
  orphan?: boolean;
}

/**
 * A daemon's pool figures as `stats` sends them: those of {@link PoolStats} (used and count
 * include quarantined and restored blocks; used is page-rounded), addresses as decimal
 * strings, ranges without per-range use, and the daemon's own figures.
 */
export interface WireStats extends Omit<PoolStats, 'busOffset' | 'ranges'> {
  /** bus = phys + busOffset (decimal string). */
  busOffset: string;
  /** Connected clients. */
  clients: number;
  /** Blocks of disconnected clients waiting out their quarantine. */
  quarantinedBlocks: number;
  /** Their bytes (as asked for). */
  quarantinedBytes: number;
  /** Blocks restored from the journal after a daemon restart that no client has reclaimed yet. */
  orphanBlocks: number;
  /** The physical ranges the daemon manages (start as a decimal string). */
  ranges: { start: string; size: number }[];
}

/** Reply to `hello`: who we are to the daemon, and where its memory is. */
export interface HelloReply {
  /** The request's id. */
  id: number;
  ok: true;
  /** {@link PROTOCOL_VERSION}. */
  version: number;
  /** This connection's client id. */
  client: number;
  /** This client's pid as the daemon sees it (SO_PEERCRED). */
  pid: number;
  /** This client's uid as the daemon sees it. */
  uid: number;
  /** The daemon's pid. */
  daemonPid: number;
  /** The memory served. */
  backend: BackendName;
  /** The file a client maps blocks from. */
  devicePath: string;
  /** bus = phys + busOffset (decimal string). */
  busOffset: string;
  /** The daemon's page size: blocks are whole pages. */
  pageSize: number;
}

/**
 * A block handed to this client: reply to `alloc` and `lookup`, entry of `reclaim`. In JSON the
 * addresses are decimal strings; the binary BLOCK frame gives bigints.
 */
// A type literal, not an interface, so that it is assignable to WireOk (the binary parser yields it).
export type BlockReply = {
  id: number;
  ok: true;
  phys: string | bigint;
  bus: string | bigint;
  /** Bytes asked for. */
  size: number;
  /** Offset in the device file to map. */
  offset: string | bigint;
  /** Token to reclaim it after a daemon restart (absent from a daemon without one). */
  token?: string;
  /** For a named buffer. */
  name?: string;
};

/** One block of a `reclaim` reply. */
export type BlockInfo = Omit<BlockReply, 'id' | 'ok'>;

/** Reply to `stats`. */
export interface StatsReply extends WireStats {
  id: number;
  ok: true;
}

/** Reply to `list`: as many blocks as fit in one frame; `truncated` when some were left out. */
export interface ListReply {
  id: number;
  ok: true;
  blocks: ServiceBlock[];
  truncated: boolean;
}

/** Reply to `reclaim`: the blocks, in the order of the tokens. */
export interface ReclaimReply {
  id: number;
  ok: true;
  blocks: BlockInfo[];
}

/** Reply to `cancel`: whether the wait was still queued. */
export interface CancelReply {
  id: number;
  ok: true;
  cancelled: boolean;
}

/** Reply to `free` and `check` (and the binary DONE frame). */
export interface DoneReply {
  id: number;
  ok: true;
}

/** A successful reply; which one answers a request follows from its op (see the `parse*Reply` functions). */
export type OkReply = HelloReply | BlockReply | StatsReply | ListReply | ReclaimReply | CancelReply | DoneReply;
/** A failed reply: a POSIX-style code and a message that says what to do. */
export interface ErrorReply { id: number; ok: false; code: string; message: string }
/** Any reply the daemon sends. `id` 0 answers a request whose id could not be read. */
export type Reply = OkReply | ErrorReply;

/**
 * A reply as the client's decoder passes it on: id and `ok` checked, the other fields not yet.
 * The `parse*Reply` function of the request's op turns it into its type.
 */
export interface WireOk { id: number; ok: true; readonly [field: string]: unknown }
/** What the client's decoder yields. */
export type WireReply = WireOk | ErrorReply;

/** One result of decoding: a valid message, an invalid one (answer it, go on), or a framing error (close). */
export type DecodeResult<T> =
  | { kind: 'message'; message: T }
  | { kind: 'invalid'; id: number; code: string; message: string }
  | { kind: 'fatal'; code: string; message: string };

/** First byte of each binary body. */
export const FrameType = { ALLOC: 0x01, FREE: 0x02, BLOCK: 0x81, DONE: 0x82 } as const;
/** ALLOC flag: queue until memory is free (GFP_KERNEL). */
export const ALLOC_WAIT = 1;
/** ALLOC flag: `timeoutMs` is given. */
export const ALLOC_TIMEOUT = 2;
const ALLOC_BYTES = 24;
const FREE_BYTES = 16;
const BLOCK_BYTES = 56;
const DONE_BYTES = 8;
const TWO32 = 2 ** 32;

// A JSON text starts with whitespace, a digit, '-', '"', '[', '{', 't', 'f' or 'n': never below 0x09 or at 0x80 and above.
function isBinary(first: number): boolean {
  return first < 0x09 || first >= 0x80;
}

// Header and an uninitialised body of `bodyLength` bytes (small frames come from Node's shared pool).
function frameOf(bodyLength: number): Buffer {
  const frame = Buffer.allocUnsafe(5 + bodyLength);
  frame.writeUInt32BE(bodyLength + 1, 0);
  frame[4] = PROTOCOL_VERSION;
  return frame;
}

/** Encode one message as a JSON frame. @throws RangeError if the encoded message exceeds {@link MAX_FRAME}. */
export function encodeFrame(message: object): Buffer {
  const json = Buffer.from(JSON.stringify(message, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)), 'utf8');
  if (json.length + 1 > MAX_FRAME) throw new RangeError(`frame of ${json.length + 1} bytes exceeds MAX_FRAME (${MAX_FRAME})`);
  const frame = frameOf(json.length);
  json.copy(frame, 5);
  return frame;
}

/**
 * Encode a binary ALLOC request. The caller has validated the values
 * (size a positive safe integer, align 0 or a power of two, name ASCII of at most 64 bytes).
 */
export function encodeAlloc(id: number, size: number, align: number, flags: number, timeoutMs: number, name: string | undefined): Buffer {
  const n = name === undefined ? 0 : name.length;
  const f = frameOf(ALLOC_BYTES + n);
  f[5] = FrameType.ALLOC;
  f[6] = flags;
  f[7] = n;
  f[8] = 0;
  f.writeUInt32LE(id, 9);
  f.writeDoubleLE(size, 13);
  f.writeUInt32LE(align, 21);
  f.writeUInt32LE(timeoutMs, 25);
  if (n !== 0) f.write(name!, 29, 'latin1');
  return f;
}

/** Encode a binary FREE request for the block at physical `phys` (< 2^64). */
export function encodeFree(id: number, phys: bigint): Buffer {
  const f = frameOf(FREE_BYTES);
  f.writeUInt32LE(FrameType.FREE, 5); // type and three zero bytes
  f.writeUInt32LE(id, 9);
  f.writeBigUInt64LE(phys, 13);
  return f;
}

/** Encode a binary BLOCK reply. `token` is 32 hex digits; `name` ASCII of at most 64 bytes. */
export function encodeBlock(id: number, phys: number, bus: bigint, offset: bigint, size: number, token: string, name: string | undefined): Buffer {
  const n = name === undefined ? 0 : name.length;
  const f = frameOf(BLOCK_BYTES + n);
  f[5] = FrameType.BLOCK;
  f[6] = n;
  f[7] = 0;
  f[8] = 0;
  f.writeUInt32LE(id, 9);
  f.writeUInt32LE(phys % TWO32, 13);
  f.writeUInt32LE(Math.floor(phys / TWO32), 17);
  f.writeBigUInt64LE(bus, 21);
  f.writeBigUInt64LE(offset, 29);
  f.writeDoubleLE(size, 37);
  f.write(token, 45, 16, 'hex');
  if (n !== 0) f.write(name!, 61, 'latin1');
  return f;
}

/** Encode a binary DONE reply. */
export function encodeDone(id: number): Buffer {
  const f = frameOf(DONE_BYTES);
  f.writeUInt32LE(FrameType.DONE, 5);
  f.writeUInt32LE(id, 9);
  return f;
}

/**
 * How a {@link FrameDecoder} reads bodies: `json` gets parsed JSON, `binary` a binary body as
 * `buffer[start, end)` (its first byte is the type; offsets rather than a subarray, which
 * would allocate per frame). Neither may throw, nor keep `buffer`: it is reused.
 */
export interface BodyParsers<T> {
  json: (value: unknown) => DecodeResult<T>;
  binary: (buffer: Buffer, start: number, end: number) => DecodeResult<T>;
}

const EMPTY = Buffer.alloc(0);

/**
 * Splits a byte stream into frames and hands each body to its parser.
 * Holds at most one frame's worth of bytes. After a `fatal` result it
 * ignores all further input.
 */
export class FrameDecoder<T> {
  #buf: Buffer = EMPTY;
  #dead = false;
  readonly #parse: BodyParsers<T>;

  /** @param parse - validates one body; must not throw. */
  constructor(parse: BodyParsers<T>) {
    this.#parse = parse;
  }

  /** True after a framing error: the stream cannot be resynchronised. */
  get dead(): boolean {
    return this.#dead;
  }

  /** Feed bytes; returns the results of every frame they complete. Never throws. */
  push(chunk: Buffer): DecodeResult<T>[] {
    const out: DecodeResult<T>[] = [];
    if (this.#dead) return out;
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    let pos = 0;
    while (this.#buf.length - pos >= 4) {
      const len = this.#buf.readUInt32BE(pos);
      if (len < 1 || len > MAX_FRAME) {
        this.#fail(out, 'EMSGSIZE', `frame length ${len} is outside [1, ${MAX_FRAME}]`);
        return out;
      }
      if (this.#buf.length - pos < 4 + len) break;
      const version = this.#buf[pos + 4];
      if (version !== PROTOCOL_VERSION) {
        this.#fail(out, 'EPROTO', `protocol version ${version} is not supported (this side speaks ${PROTOCOL_VERSION})`);
        return out;
      }
      const start = pos + 5;
      const end = pos + 4 + len;
      pos = end;
      out.push(this.#body(this.#buf, start, end));
    }
    // A partial frame is copied: the caller may reuse `chunk` (net's onread buffer).
    this.#buf = pos === this.#buf.length ? EMPTY : Buffer.from(this.#buf.subarray(pos));
    return out;
  }

  // One body: binary by its first byte, else JSON. Parsers do not throw; the catch only
  // keeps a parser bug from taking the daemon down.
  #body(buf: Buffer, start: number, end: number): DecodeResult<T> {
    const binary = end > start && isBinary(buf[start]);
    let value: unknown;
    if (!binary) {
      try {
        value = JSON.parse(buf.toString('utf8', start, end));
      } catch {
        return { kind: 'invalid', id: 0, code: 'EPROTO', message: 'frame body is not valid JSON' };
      }
    }
    try {
      return binary ? this.#parse.binary(buf, start, end) : this.#parse.json(value);
    } catch {
      return { kind: 'invalid', id: 0, code: 'EPROTO', message: 'malformed message' };
    }
  }

  #fail(out: DecodeResult<T>[], code: string, message: string): void {
    this.#dead = true;
    this.#buf = EMPTY;
    out.push({ kind: 'fatal', code, message });
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isId(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= MAX_ID;
}

const FIELDS: Readonly<Record<Request['op'], readonly string[]>> = {
  hello: ['op', 'id'],
  alloc: ['op', 'id', 'size', 'align', 'wait', 'timeoutMs', 'name'],
  lookup: ['op', 'id', 'name'],
  free: ['op', 'id', 'phys'],
  cancel: ['op', 'id', 'target'],
  stats: ['op', 'id'],
  list: ['op', 'id'],
  check: ['op', 'id'],
  reclaim: ['op', 'id', 'tokens'],
};

/** The daemon's parsers: every request, JSON or binary. */
export const requestParsers: BodyParsers<Request> = { json: parseRequest, binary: parseBinaryRequest };
/** The client's parsers: every reply, JSON or binary. */
export const replyParsers: BodyParsers<WireReply> = { json: parseReply, binary: parseBinaryReply };

function isName(b: Buffer, start: number, n: number): boolean {
  if (n < 1 || n > 64) return false;
  for (let i = start; i < start + n; i++) {
    const c = b[i];
    // A-Z a-z 0-9 . _ -  (NAME_PATTERN)
    if (!((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x5f || c === 0x2d)) return false;
  }
  return true;
}

/**
 * Validate a binary request body (ALLOC or FREE), `b[o, end)`: exact length, zero
 * reserved bytes and flags, every field in range. Never throws.
 */
export function parseBinaryRequest(b: Buffer, o: number, end: number): DecodeResult<Request> {
  const type = b[o];
  const length = end - o;
  const id = length >= 8 ? b.readUInt32LE(o + 4) : 0;
  const bad = (message: string): DecodeResult<Request> => ({ kind: 'invalid', id, code: 'EINVAL', message });
  if (type === FrameType.ALLOC) {
    const n = b[o + 2];
    if (length < ALLOC_BYTES || length !== ALLOC_BYTES + n) return bad(`a binary alloc has ${ALLOC_BYTES} bytes plus its name, got ${length}`);
    if (id === 0) return bad(`id must be an integer in [1, ${MAX_ID}]`);
    const flags = b[o + 1];
    if ((flags & ~(ALLOC_WAIT | ALLOC_TIMEOUT)) !== 0 || b[o + 3] !== 0) return bad('unknown alloc flags');
    const size = b.readDoubleLE(o + 8);
    if (!Number.isSafeInteger(size) || size < 1) return bad(SIZE_RULE);
    const align = b.readUInt32LE(o + 16);
    if ((align !== 0 && !isPowerOfTwo(align)) || align > 2 ** 30) return bad(ALIGN_RULE); // 0: the default
    const timeoutMs = b.readUInt32LE(o + 20);
    if ((flags & ALLOC_TIMEOUT) === 0 ? timeoutMs !== 0 : timeoutMs > 2 ** 31 - 1) return bad(TIMEOUT_RULE);
    if (n !== 0 && !isName(b, o + ALLOC_BYTES, n)) return bad(NAME_RULE);
    const m: AllocRequest = { op: 'alloc', id, size, binary: true };
    if (align !== 0) m.align = align;
    if ((flags & ALLOC_WAIT) !== 0) m.wait = true;
    if ((flags & ALLOC_TIMEOUT) !== 0) m.timeoutMs = timeoutMs;
    if (n !== 0) m.name = b.toString('latin1', o + ALLOC_BYTES, end);
    return { kind: 'message', message: m };
  }
  if (type === FrameType.FREE) {
    if (length !== FREE_BYTES) return bad(`a binary free has ${FREE_BYTES} bytes, got ${length}`);
    if (b[o + 1] !== 0 || b[o + 2] !== 0 || b[o + 3] !== 0) return bad('reserved bytes of a binary free must be 0');
    if (id === 0) return bad(`id must be an integer in [1, ${MAX_ID}]`);
    return { kind: 'message', message: { op: 'free', id, phys: b.readBigUInt64LE(o + 8), binary: true } };
  }
  return { kind: 'invalid', id: 0, code: 'EPROTO', message: `unknown binary request type ${hex(type)}` };
}

/** Validate a binary reply body (BLOCK or DONE), `b[o, end)`, client side. Never throws. */
export function parseBinaryReply(b: Buffer, o: number, end: number): DecodeResult<WireReply> {
  const type = b[o];
  const length = end - o;
  if (type === FrameType.DONE && length === DONE_BYTES) return { kind: 'message', message: { id: b.readUInt32LE(o + 4), ok: true } };
  if (type === FrameType.BLOCK && length >= BLOCK_BYTES && length === BLOCK_BYTES + b[o + 1]) {
    const lo = b.readUInt32LE(o + 8);
    const hi = b.readUInt32LE(o + 12);
    const r: BlockReply = {
      id: b.readUInt32LE(o + 4),
      ok: true,
      phys: hi < 0x200000 ? BigInt(hi * TWO32 + lo) : (BigInt(hi) << 32n) | BigInt(lo),
      bus: b.readBigUInt64LE(o + 16),
      offset: b.readBigUInt64LE(o + 24),
      size: b.readDoubleLE(o + 32),
      token: b.toString('hex', o + 40, o + 56),
    };
    if (b[o + 1] !== 0) r.name = b.toString('latin1', o + BLOCK_BYTES, end);
    return { kind: 'message', message: r };
  }
  return { kind: 'fatal', code: 'EPROTO', message: `the daemon sent a malformed binary reply (type ${hex(type)}, ${length} bytes)` };
}

const NAME_RULE = 'name must be 1 to 64 of A-Z a-z 0-9 . _ -';
const SIZE_RULE = 'size must be a positive integer';
const ALIGN_RULE = 'align must be a power of two in [1, 2^30]';
const TIMEOUT_RULE = 'timeoutMs must be an integer in [0, 2^31 - 1]';

/**
 * The first field of an allocation that breaks its rule (name, size, align, wait,
 * timeoutMs, in that order), as the message to give; undefined when all are valid or
 * absent (size must be present). The daemon checks JSON requests with it, and the client
 * its arguments, because the binary frame cannot carry a value of the wrong type.
 */
export function allocFieldError(size: unknown, align: unknown, wait: unknown, timeoutMs: unknown, name: unknown): string | undefined {
  if (name !== undefined && (typeof name !== 'string' || !NAME_PATTERN.test(name))) return NAME_RULE;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 1) return SIZE_RULE;
  if (align !== undefined && (!isPowerOfTwo(align) || align > 2 ** 30)) return ALIGN_RULE;
  if (wait !== undefined && typeof wait !== 'boolean') return 'wait must be a boolean';
  if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > MAX_TIMEOUT_MS)) return TIMEOUT_RULE;
  return undefined;
}

/**
 * Validate a parsed request body. Unknown ops, unknown fields, wrong types and
 * out-of-range values give `invalid` (EINVAL, or EPROTO when not even an
 * object with an id). Never throws.
 */
export function parseRequest(v: unknown): DecodeResult<Request> {
  if (!isPlainObject(v)) return { kind: 'invalid', id: 0, code: 'EPROTO', message: 'a request must be a JSON object' };
  const id = isId(v.id) ? v.id : 0;
  const bad = (message: string): DecodeResult<Request> => ({ kind: 'invalid', id, code: 'EINVAL', message });
  if (id === 0) return bad(`id must be an integer in [1, ${MAX_ID}]`);
  const op = v.op;
  if (typeof op !== 'string' || !Object.prototype.hasOwnProperty.call(FIELDS, op)) return bad(`unknown op ${JSON.stringify(op)?.slice(0, 40)}`);
  const allowed = FIELDS[op as Request['op']];
  for (const k of Object.keys(v)) if (!allowed.includes(k)) return bad(`unexpected field '${k.slice(0, 40)}' in ${op}`);
  switch (op) {
    case 'alloc': {
      const { size, align, wait, timeoutMs, name } = v;
      const wrong = allocFieldError(size, align, wait, timeoutMs, name);
      if (wrong !== undefined) return bad(wrong);
      const m: AllocRequest = { op, id, size: size as number };
      if (align !== undefined) m.align = align as number;
      if (wait !== undefined) m.wait = wait as boolean;
      if (timeoutMs !== undefined) m.timeoutMs = timeoutMs as number;
      if (name !== undefined) m.name = name as string;
      return { kind: 'message', message: m };
    }
    case 'lookup':
      if (typeof v.name !== 'string' || !NAME_PATTERN.test(v.name)) return bad(NAME_RULE);
      return { kind: 'message', message: { op, id, name: v.name } };
    case 'free': {
      if (typeof v.phys !== 'string' || !/^(0|[1-9][0-9]{0,19})$/.test(v.phys)) return bad('phys must be a decimal string');
      return { kind: 'message', message: { op, id, phys: BigInt(v.phys) } };
    }
    case 'cancel':
      if (!isId(v.target)) return bad(`target must be an integer in [1, ${MAX_ID}]`);
      return { kind: 'message', message: { op, id, target: v.target } };
    case 'reclaim': {
      const t = v.tokens;
      if (!Array.isArray(t) || t.length < 1 || t.length > MAX_RECLAIM) return bad(`tokens must be an array of 1 to ${MAX_RECLAIM} tokens`);
      if (!t.every((x): x is string => typeof x === 'string' && /^[0-9a-f]{32}$/.test(x))) return bad('each token must be 32 lowercase hex digits');
      if (new Set(t).size !== t.length) return bad('a token appears twice');
      return { kind: 'message', message: { op, id, tokens: t } };
    }
    default:
      return { kind: 'message', message: { op: op as 'hello' | 'stats' | 'list' | 'check', id } };
  }
}

/** Validate a parsed reply body (client side): an object with an id and `ok`; errors need a code and message. */
export function parseReply(v: unknown): DecodeResult<WireReply> {
  if (!isPlainObject(v) || typeof v.id !== 'number' || !Number.isInteger(v.id) || v.id < 0 || v.id > MAX_ID || typeof v.ok !== 'boolean') {
    return { kind: 'fatal', code: 'EPROTO', message: 'the daemon sent a malformed reply' };
  }
  if (v.ok === false && (typeof v.code !== 'string' || typeof v.message !== 'string')) {
    return { kind: 'fatal', code: 'EPROTO', message: 'the daemon sent an error reply without code or message' };
  }
  return { kind: 'message', message: v as unknown as WireReply };
}

function malformed(what: string): never {
  throw new PhysmemError('EPROTO', `the daemon sent a malformed reply: ${what}`, { hint: 'the daemon and this client may be different versions' });
}
const num = (r: Readonly<Record<string, unknown>>, k: string): number => (typeof r[k] === 'number' && Number.isFinite(r[k]) ? r[k] : malformed(`${k} is not a number`));
const str = (r: Readonly<Record<string, unknown>>, k: string): string => (typeof r[k] === 'string' ? r[k] : malformed(`${k} is not a string`));
const decimal = (r: Readonly<Record<string, unknown>>, k: string): string => (/^(0|[1-9][0-9]*)$/.test(str(r, k)) ? (r[k] as string) : malformed(`${k} is not a decimal string`));
const addr = (r: Readonly<Record<string, unknown>>, k: string): string | bigint => (typeof r[k] === 'bigint' ? r[k] : decimal(r, k));
const optStr = (r: Readonly<Record<string, unknown>>, k: string): string | undefined => (r[k] === undefined ? undefined : str(r, k));
const isBackend = (v: string): v is BackendName => ['fake', 'hugepage', 'udmabuf', 'devmem'].includes(v);

/** Type the reply to `hello`. @throws {PhysmemError} EPROTO when a field is missing or of the wrong type. */
export function parseHelloReply(r: WireOk): HelloReply {
  const backend = str(r, 'backend');
  if (!isBackend(backend)) malformed(`unknown backend ${JSON.stringify(backend).slice(0, 40)}`);
  return {
    id: r.id,
    ok: true,
    version: num(r, 'version'),
    client: num(r, 'client'),
    pid: num(r, 'pid'),
    uid: num(r, 'uid'),
    daemonPid: num(r, 'daemonPid'),
    backend,
    devicePath: str(r, 'devicePath'),
    busOffset: decimal(r, 'busOffset'),
    pageSize: num(r, 'pageSize'),
  };
}

/** Type a block reply (`alloc`, `lookup`, or one entry of `reclaim`). @throws {PhysmemError} EPROTO. */
export function parseBlockReply(r: Readonly<Record<string, unknown>> & { id?: unknown }): BlockReply {
  const out: BlockReply = { id: typeof r.id === 'number' ? r.id : 0, ok: true, phys: addr(r, 'phys'), bus: addr(r, 'bus'), size: num(r, 'size'), offset: addr(r, 'offset') };
  const token = optStr(r, 'token');
  if (token !== undefined) out.token = token;
  const name = optStr(r, 'name');
  if (name !== undefined) out.name = name;
  return out;
}

/** Type the reply to `stats`. @throws {PhysmemError} EPROTO. */
export function parseStatsReply(r: WireOk): StatsReply {
  const backend = str(r, 'backend');
  if (!isBackend(backend)) malformed(`unknown backend ${JSON.stringify(backend).slice(0, 40)}`);
  if (!Array.isArray(r.ranges)) malformed('ranges is not an array');
  return {
    id: r.id,
    ok: true,
    backend,
    total: num(r, 'total'),
    used: num(r, 'used'),
    free: num(r, 'free'),
    largestFree: num(r, 'largestFree'),
    count: num(r, 'count'),
    waiting: num(r, 'waiting'),
    busOffset: decimal(r, 'busOffset'),
    clients: num(r, 'clients'),
    quarantinedBlocks: num(r, 'quarantinedBlocks'),
    quarantinedBytes: num(r, 'quarantinedBytes'),
    orphanBlocks: r.orphanBlocks === undefined ? 0 : num(r, 'orphanBlocks'), // older daemons
    ranges: (r.ranges as unknown[]).map((x) => {
      if (!isPlainObject(x)) malformed('a range is not an object');
      return { start: decimal(x, 'start'), size: num(x, 'size') };
    }),
  };
}

/** Type the reply to `list`. @throws {PhysmemError} EPROTO. */
export function parseListReply(r: WireOk): ListReply {
  if (!Array.isArray(r.blocks)) malformed('blocks is not an array');
  const blocks = (r.blocks as unknown[]).map((x): ServiceBlock => {
    if (!isPlainObject(x)) malformed('a block is not an object');
    const b: ServiceBlock = { phys: decimal(x, 'phys'), size: num(x, 'size'), client: num(x, 'client'), pid: num(x, 'pid'), quarantined: x.quarantined === true };
    const name = optStr(x, 'name');
    if (name !== undefined) b.name = name;
    if (x.holders !== undefined) {
      if (!Array.isArray(x.holders) || !x.holders.every((h) => typeof h === 'number')) malformed('holders is not a list of client ids');
      b.holders = x.holders;
    }
    if (x.holderCount !== undefined) b.holderCount = num(x, 'holderCount');
    if (x.orphan === true) b.orphan = true;
    return b;
  });
  return { id: r.id, ok: true, blocks, truncated: r.truncated === true };
}

/** Type the reply to `reclaim`. @throws {PhysmemError} EPROTO. */
export function parseReclaimReply(r: WireOk): ReclaimReply {
  if (!Array.isArray(r.blocks)) malformed('blocks is not an array');
  return {
    id: r.id,
    ok: true,
    blocks: (r.blocks as unknown[]).map((x) => {
      if (!isPlainObject(x)) malformed('a block is not an object');
      const { id: _id, ok: _ok, ...info } = parseBlockReply(x);
      return info;
    }),
  };
}

/** Where an {@link Outbox} writes: a `net.Socket`. */
export interface FrameSink {
  readonly destroyed: boolean;
  /** Bytes written but not yet taken by the kernel. */
  readonly writableLength?: number;
  write(data: Buffer): unknown;
}

/**
 * Frames queued for one socket and written together once the current
 * callback and its microtasks are done (process.nextTick): replies to a
 * chunk of pipelined requests, or requests issued by several async tasks in
 * one turn, leave in one write(2) instead of one each. The kernel and the
 * peer's event loop then pay one wake-up for the batch.
 */
export class Outbox {
  readonly #sink: FrameSink;
  readonly #frames: Buffer[] = [];
  #scheduled = false;
  readonly #flush = (): void => this.flush();
  #queued = 0;

  /** @param sink - the socket to write to. */
  constructor(sink: FrameSink) {
    this.#sink = sink;
  }

  /** Bytes not yet taken by the kernel: queued here plus buffered in the socket. */
  get backlog(): number {
    return this.#queued + (this.#sink.writableLength ?? 0);
  }

  /** Queue one frame. */
  push(frame: Buffer): void {
    this.#frames.push(frame);
    this.#queued += frame.length;
    if (!this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(this.#flush);
    }
  }

  /** Write what is queued now (before `end()`, for instance). A destroyed socket drops it. */
  flush(): void {
    this.#scheduled = false;
    const frames = this.#frames;
    if (frames.length === 0) return;
    const data = frames.length === 1 ? frames[0] : Buffer.concat(frames);
    frames.length = 0; // reused: the data was copied (or is the one frame)
    this.#queued = 0;
    if (!this.#sink.destroyed) this.#sink.write(data);
  }
}
