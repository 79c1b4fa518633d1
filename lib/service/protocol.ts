/**
 * The wire protocol between a physmem daemon (`physmem serve`) and its
 * clients: length-prefixed frames, each carrying one JSON message.
 *
 * ```
 * | u32 big-endian: length L of what follows (1..MAX_FRAME) | u8 version | L-1 bytes of UTF-8 JSON |
 * ```
 *
 * JSON inside a binary frame: the framing (length, version, maximum size) is
 * checked before any parsing, so a peer cannot make the other side buffer
 * without bound, and every field is then validated by hand. Addresses travel
 * as decimal strings (they may exceed 2^53 on the bus side).
 *
 * Decoders never throw on their input: they return typed results, and a
 * framing error ends the stream ({@link DecodeResult} `fatal`), because after
 * a bad length the next frame boundary is unknown.
 * @module
 */

/** Protocol version carried in every frame. A daemon refuses other versions. */
export const PROTOCOL_VERSION = 1;
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
  size: number;
  align?: number;
  wait?: boolean;
  timeoutMs?: number;
  name?: string;
}
/** `lookup`: attach the named buffer `name` (one more holder). */
export interface LookupRequest { op: 'lookup'; id: number; name: string }
/** `free`: free the caller's own block starting at physical `phys`. */
export interface FreeRequest { op: 'free'; id: number; phys: bigint }
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

/** A successful reply: `ok: true` plus op-specific fields. */
export interface OkReply { id: number; ok: true; [field: string]: unknown }
/** A failed reply: a POSIX-style code and a message that says what to do. */
export interface ErrorReply { id: number; ok: false; code: string; message: string }
/** Any reply. `id` 0 answers a request whose id could not be read. */
export type Reply = OkReply | ErrorReply;

/** One result of decoding: a valid message, an invalid one (answer it, go on), or a framing error (close). */
export type DecodeResult<T> =
  | { kind: 'message'; message: T }
  | { kind: 'invalid'; id: number; code: string; message: string }
  | { kind: 'fatal'; code: string; message: string };

/** Encode one message as a frame. @throws RangeError if the encoded message exceeds {@link MAX_FRAME}. */
export function encodeFrame(message: object): Buffer {
  const json = Buffer.from(JSON.stringify(message, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)), 'utf8');
  if (json.length + 1 > MAX_FRAME) throw new RangeError(`frame of ${json.length + 1} bytes exceeds MAX_FRAME (${MAX_FRAME})`);
  const frame = Buffer.allocUnsafe(5 + json.length);
  frame.writeUInt32BE(json.length + 1, 0);
  frame[4] = PROTOCOL_VERSION;
  json.copy(frame, 5);
  return frame;
}

/**
 * Splits a byte stream into frames and hands each JSON body to `parse`.
 * Holds at most one frame's worth of bytes. After a `fatal` result it
 * ignores all further input.
 */
export class FrameDecoder<T> {
  #buf: Buffer = Buffer.alloc(0);
  #dead = false;
  readonly #parse: (value: unknown) => DecodeResult<T>;

  /** @param parse - validates one parsed JSON body; must not throw. */
  constructor(parse: (value: unknown) => DecodeResult<T>) {
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
      const body = this.#buf.subarray(pos + 5, pos + 4 + len);
      pos += 4 + len;
      let value: unknown;
      try {
        value = JSON.parse(body.toString('utf8'));
      } catch {
        out.push({ kind: 'invalid', id: 0, code: 'EPROTO', message: 'frame body is not valid JSON' });
        continue;
      }
      try {
        out.push(this.#parse(value));
      } catch {
        // parse functions do not throw; this only guards against a bug taking the daemon down.
        out.push({ kind: 'invalid', id: 0, code: 'EPROTO', message: 'malformed message' });
      }
    }
    this.#buf = pos === this.#buf.length ? Buffer.alloc(0) : this.#buf.subarray(pos);
    return out;
  }

  #fail(out: DecodeResult<T>[], code: string, message: string): void {
    this.#dead = true;
    this.#buf = Buffer.alloc(0);
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
      if (name !== undefined && (typeof name !== 'string' || !NAME_PATTERN.test(name))) return bad('name must be 1 to 64 of A-Z a-z 0-9 . _ -');
      if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 1) return bad('size must be a positive integer');
      if (align !== undefined && (typeof align !== 'number' || !Number.isSafeInteger(align) || align < 1 || (align & (align - 1)) !== 0 || align > 2 ** 30)) {
        return bad('align must be a power of two in [1, 2^30]');
      }
      if (wait !== undefined && typeof wait !== 'boolean') return bad('wait must be a boolean');
      if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > 2 ** 31 - 1)) {
        return bad('timeoutMs must be an integer in [0, 2^31 - 1]');
      }
      const m: AllocRequest = { op, id, size };
      if (align !== undefined) m.align = align as number;
      if (wait !== undefined) m.wait = wait as boolean;
      if (timeoutMs !== undefined) m.timeoutMs = timeoutMs as number;
      if (name !== undefined) m.name = name as string;
      return { kind: 'message', message: m };
    }
    case 'lookup':
      if (typeof v.name !== 'string' || !NAME_PATTERN.test(v.name)) return bad('name must be 1 to 64 of A-Z a-z 0-9 . _ -');
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
export function parseReply(v: unknown): DecodeResult<Reply> {
  if (!isPlainObject(v) || typeof v.id !== 'number' || !Number.isInteger(v.id) || v.id < 0 || v.id > MAX_ID || typeof v.ok !== 'boolean') {
    return { kind: 'fatal', code: 'EPROTO', message: 'the daemon sent a malformed reply' };
  }
  if (v.ok === false && (typeof v.code !== 'string' || typeof v.message !== 'string')) {
    return { kind: 'fatal', code: 'EPROTO', message: 'the daemon sent an error reply without code or message' };
  }
  return { kind: 'message', message: v as unknown as Reply };
}
