/**
 * The client side of standalone mode: a pool served by a physmem daemon
 * (`physmem serve`), reached with `openPool({ service: '/run/physmem/pool.sock' })`.
 *
 * Every call is a round trip to the daemon, so the pool is asynchronous:
 * `allocAsync`, `statsAsync`, and `free()` / `close()` return Promises.
 * The client maps each block itself from the device path and file offset the
 * daemon returns (so it needs permission to open that file; see docs/service.md).
 * @module
 */
import { addressAt } from '../address.js';
import { connect, type Socket } from 'node:net';
import { PhysmemError, invalidArgument } from '../errors.js';
import { closeFile, openFile } from '../mapping.js';
import { native, toPhysmemError } from '../native.js';
import {
  ALLOC_TIMEOUT,
  ALLOC_WAIT,
  FrameDecoder,
  MAX_ID,
  Outbox,
  allocFieldError,
  encodeAlloc,
  encodeFrame,
  encodeFree,
  parseBlockReply,
  parseHelloReply,
  parseListReply,
  parseReclaimReply,
  parseStatsReply,
  replyParsers,
  type BlockInfo,
  type BlockReply,
  type HelloReply,
  type ServiceBlock,
  type WireOk,
  type WireReply,
  type WireStats,
} from './protocol.js';
import type { BackendName } from '../backends/types.js';
import { checkBoolean, checkSignal, closestName, describeValue, hex, isArray, optionNames, optionsChecker } from '../internal/validate.js';

/** Options of a pool served by a daemon. */
export interface ServicePoolOptions {
  /** Path of the daemon's Unix socket. */
  service: string;
}

/** Options of {@link ServicePool.connect}; unknown names are refused with EINVAL. */
export interface ServiceConnectOptions {
  /** Let the process exit while no request is outstanding (the socket is unref'd when idle). Default false. */
  unrefWhenIdle?: boolean;
  /** Map the daemon's memory so blocks can be allocated and used; false for a monitoring connection (stats only). Default true. */
  mapBlocks?: boolean;
}

const checkServicePoolOptions = optionsChecker('openPool({ service })', optionNames<ServicePoolOptions>({ service: true }));
const checkConnectOptions = optionsChecker('ServicePool.connect()', optionNames<ServiceConnectOptions>({ unrefWhenIdle: true, mapBlocks: true }));
const SERVICE_ALLOC_NAMES = optionNames<ServiceAllocOptions>({ align: true, wait: true, timeoutMs: true, signal: true, name: true });
const LINKED_ONLY_NAMES = ['at', 'boundary', 'maxAddress', 'zero'];

/** Options of {@link ServicePool.allocAsync}. */
export interface ServiceAllocOptions {
  /** Alignment of the physical address (power of two). Blocks are always at least page-aligned. */
  align?: number;
  /** Wait (FIFO) until enough memory is freed, like GFP_KERNEL, instead of failing at once with ENOMEM (GFP_ATOMIC). Default false. */
  wait?: boolean;
  /** With `wait`: give up after this many ms (ETIMEDOUT). */
  timeoutMs?: number;
  /** With `wait`: abort the wait (ECANCELED). */
  signal?: AbortSignal;
  /** Make it a named buffer that other clients can attach with {@link ServicePool.lookup} (EEXIST if the name is taken). */
  name?: string;
}

/**
 * Usage of a daemon's pool, from {@link ServicePool.statsAsync}: {@link WireStats} with
 * `busOffset` and range starts as bigints.
 */
export interface ServiceStats extends Omit<WireStats, 'busOffset' | 'ranges'> {
  /** bus = phys + busOffset. */
  busOffset: bigint;
  /** The physical ranges the daemon manages. */
  ranges: { start: bigint; size: number }[];
}

/**
 * Requests waiting for their reply, by id. The table hands out the ids
 * itself: the next id in sequence (1..MAX_ID, wrapping) whose slot
 * `id & mask` is free, so ids never collide and a reply finds its request in
 * one probe, without the allocation a Map makes as it grows and shrinks
 * (about 0.5 KB per request here). The table doubles when half full.
 * @internal Exported for tests.
 */
export class PendingTable {
  #ids: number[] = new Array<number>(16).fill(0);
  #resolve: (((r: WireOk) => void) | undefined)[] = new Array<((r: WireOk) => void) | undefined>(16).fill(undefined);
  #reject: (((e: PhysmemError) => void) | undefined)[] = new Array<((e: PhysmemError) => void) | undefined>(16).fill(undefined);
  #mask = 15;
  #next = 1;
  /** Requests waiting. */
  size = 0;

  /** Register a request; returns its id. */
  add(resolve: (r: WireOk) => void, reject: (e: PhysmemError) => void): number {
    if (2 * (this.size + 1) > this.#ids.length) this.#grow();
    let id = this.#next;
    while (this.#ids[id & this.#mask] !== 0) id = id >= MAX_ID ? 1 : id + 1; // skip ids whose slot is taken
    this.#next = id >= MAX_ID ? 1 : id + 1;
    const i = id & this.#mask;
    this.#ids[i] = id;
    this.#resolve[i] = resolve;
    this.#reject[i] = reject;
    this.size++;
    return id;
  }

  /** Forget request `id` without settling it. */
  remove(id: number): void {
    const i = id & this.#mask;
    if (id === 0 || this.#ids[i] !== id) return;
    this.#ids[i] = 0;
    this.#resolve[i] = undefined;
    this.#reject[i] = undefined;
    this.size--;
  }

  /** Settle the request `reply.id` with `reply`; false when no request has that id. */
  settle(reply: WireReply): boolean {
    const i = reply.id & this.#mask;
    if (reply.id === 0 || this.#ids[i] !== reply.id) return false;
    const resolve = this.#resolve[i]!;
    const reject = this.#reject[i]!;
    this.remove(reply.id);
    if (reply.ok) resolve(reply);
    else reject(replyError(reply));
    return true;
  }

  /** Reject every waiting request with `e` and empty the table. */
  failAll(e: PhysmemError): void {
    const rejects = this.#reject.filter((r) => r !== undefined);
    this.#ids.fill(0);
    this.#resolve.fill(undefined);
    this.#reject.fill(undefined);
    this.size = 0;
    for (const r of rejects) r(e);
  }

  #grow(): void {
    const ids = this.#ids;
    const res = this.#resolve;
    const rej = this.#reject;
    const n = ids.length * 2;
    this.#ids = new Array<number>(n).fill(0);
    this.#resolve = new Array<((r: WireOk) => void) | undefined>(n).fill(undefined);
    this.#reject = new Array<((e: PhysmemError) => void) | undefined>(n).fill(undefined);
    this.#mask = n - 1;
    for (let j = 0; j < ids.length; j++) {
      if (ids[j] === 0) continue;
      const i = ids[j] & this.#mask; // free: distinct low bits under the old mask stay distinct
      this.#ids[i] = ids[j];
      this.#resolve[i] = res[j];
      this.#reject[i] = rej[j];
    }
  }
}

function replyError(r: WireReply & { ok: false }): PhysmemError {
  // The daemon's message already reads "CODE: detail. hint"; keep it as the detail.
  return new PhysmemError(r.code, r.message.replace(/^[A-Z]+: /, ''));
}

const kLiveIndex = Symbol('physmem.liveIndex');

/**
 * A block of a daemon's pool, mapped into this process. `bytes` covers
 * exactly its `size` bytes.
 */
export class ServiceBuffer {
  /** Physical address of the first byte. */
  readonly phys: bigint;
  /** Address the device uses. */
  readonly bus: bigint;
  /** Size in bytes (as asked for). */
  readonly size: number;
  /** The block's bytes; zero-length after free. */
  readonly bytes: Uint8Array;
  /** The name of a named buffer; undefined otherwise. */
  readonly name: string | undefined;
  /**
   * The block's token (32 hex digits): after a daemon restart with a journal (`--state-dir`),
   * {@link ServicePool.reclaim} with it takes the block back. Keep it somewhere that survives
   * the daemon (this process, or a file of yours); it is undefined with an older daemon.
   */
  readonly token: string | undefined;
  /** @internal Its index in its pool's list of live buffers; -1 once freed. */
  [kLiveIndex] = -1;
  readonly #pool: ServicePool;
  // The block's own mmap and its one ArrayBuffer, straight from the addon: a Mapping object
  // (slots for many views) costs about 1 us more per block, and a block only ever has one view.
  #handle: number;
  readonly #buffer: ArrayBuffer;

  /** @internal Created by {@link ServicePool.allocAsync}; takes over the mmap `handle`. */
  constructor(pool: ServicePool, phys: bigint, bus: bigint, size: number, handle: number, name?: string, token?: string) {
    this.#pool = pool;
    this.token = token;
    this.name = name;
    this.phys = phys;
    this.bus = bus;
    this.size = size;
    this.#handle = handle;
    this.#buffer = native().arrayBuffer(handle, 0, size);
    this.bytes = new Uint8Array(this.#buffer);
  }

  /** True once freed. */
  get freed(): boolean {
    return this.bytes.byteLength === 0;
  }

  /**
   * The bus address of byte `offset` of the buffer (see DmaBuffer.busAt).
   * @param offset - an integer in [0, size).
   * @throws {PhysmemError} EINVAL (not an integer, or freed), ERANGE (outside the buffer).
   */
  busAt(offset: number): bigint {
    return addressAt('busAt', this.bus, this.size, offset, this.bytes.byteLength === 0);
  }

  /**
   * The physical address of byte `offset` of the buffer (see DmaBuffer.physAt).
   * @throws {PhysmemError} as {@link ServiceBuffer.busAt}.
   */
  physAt(offset: number): bigint {
    return addressAt('physAt', this.phys, this.size, offset, this.bytes.byteLength === 0);
  }

  /**
   * Return the block to the daemon. `bytes` becomes zero-length at once (and
   * the block is unmapped); the Promise settles when the daemon confirms.
   * A hot loop need not await it before its next `allocAsync`: the daemon
   * handles one connection's requests in order, so that allocation already
   * sees this memory free.
   *
   * The Promise is marked handled, so a free nobody awaits never crashes the
   * program (no unhandled rejection) when the daemon dies or refuses it. Its
   * failure is not lost: it rejects the Promise for whoever awaits it, and the
   * pool also reports it as a process warning (`PhysmemFreeWarning`, code
   * `PHYSMEM_FREE_FAILED`; once per pool for a lost connection, since every
   * later call then fails with ECONNRESET anyway).
   * For a named buffer this drops this client's hold; the last holder's free frees it.
   * @throws {PhysmemError} EINVAL (rejected) if already freed.
   */
  free(): Promise<void> {
    if (this.bytes.byteLength === 0) {
      return Promise.reject(new PhysmemError('EINVAL', `buffer at ${hex(this.phys)} was already freed`, { hint: 'free each buffer once' }));
    }
    this.unmap();
    return this.#pool.freeBlock(this);
  }

  /** @internal Detach `bytes` (every view of it becomes empty), then unmap; idempotent. */
  unmap(): void {
    const h = this.#handle;
    if (h === -1) return;
    this.#handle = -1;
    const n = native();
    n.detach(h, this.#buffer);
    n.munmap(h);
  }
}

/**
 * A pool served by a daemon. Same shape as {@link Pool} where it can be:
 * `allocAsync`, `statsAsync`, `close`; `alloc` (synchronous) is not possible.
 */
export class ServicePool {
  /** The daemon's backend. */
  readonly backend: BackendName;
  /** bus = phys + busOffset. */
  readonly busOffset: bigint;
  /** This connection's client id at the daemon. */
  readonly clientId: number;
  /** The daemon's pid. */
  readonly daemonPid: number;
  /** The file blocks are mapped from. */
  readonly devicePath: string;
  /** The daemon's page size: blocks are whole pages. */
  readonly pageSize: number;
  readonly #socket: Socket;
  readonly #outbox: Outbox;
  readonly #pending: PendingTable;
  readonly #page: number;
  readonly #unrefWhenIdle: boolean; // compat: an idle connection must not keep the program alive
  readonly #live: ServiceBuffer[] = []; // unordered; each buffer knows its index (kLiveIndex)
  readonly #fd: number;
  #lastId = 0; // id of the latest request, for cancel
  #closed = false;
  #closing: Promise<void> | undefined; // set by close(): from then on nothing new is mapped

  private constructor(socket: Socket, hello: HelloReply, fd: number, pending: PendingTable, unrefWhenIdle: boolean) {
    this.#unrefWhenIdle = unrefWhenIdle;
    this.#socket = socket;
    this.#outbox = new Outbox(socket);
    this.#pending = pending; // the map the socket's data handler resolves
    this.#page = hello.pageSize;
    this.pageSize = this.#page;
    this.backend = hello.backend;
    this.busOffset = BigInt(hello.busOffset);
    this.clientId = hello.client;
    this.daemonPid = hello.daemonPid;
    this.devicePath = hello.devicePath;
    this.#fd = fd;
  }

  /**
   * Connect to the daemon at `path` and open its memory file.
   * @param options.mapBlocks - default true. False: a connection that only asks (stats, list,
   *   check) and never maps a block, so it needs no access to the memory file (`physmem status`
   *   uses it); its allocAsync, lookup and reclaim reject with ENOTSUP.
   * @throws {PhysmemError} ENOENT / ECONNREFUSED when no daemon listens there; EACCES when the
   *   socket or the memory file is not accessible to this user.
   */
  static async connect(path: string, options: ServiceConnectOptions = {}): Promise<ServicePool> {
    checkConnectOptions(options);
    checkBoolean(options.unrefWhenIdle, 'unrefWhenIdle', 'ServicePool.connect()');
    checkBoolean(options.mapBlocks, 'mapBlocks', 'ServicePool.connect()');
    if (typeof path !== 'string' || path === '') throw invalidArgument('service must be the path of a physmem daemon socket');
    const pending = new PendingTable();
    const decoder = new FrameDecoder(replyParsers);
    const fail = (e: PhysmemError) => pending.failAll(e);
    let socket: Socket | undefined;
    const onChunk = (chunk: Buffer): void => {
      for (const r of decoder.push(chunk)) {
        if (r.kind !== 'message') {
          fail(new PhysmemError(r.code, r.message, { hint: 'the daemon and this client may be different versions' }));
          socket?.destroy();
          return;
        }
        // Id 0 (a framing complaint about us, followed by close) settles nothing.
        if (pending.settle(r.message) && pending.size === 0 && options.unrefWhenIdle) socket?.unref();
      }
    };
    socket = await new Promise<Socket>((resolve, reject) => {
      // onread: every read lands in this one buffer (the decoder copies what it keeps),
      // instead of a fresh 64 KiB buffer and a trip through the stream machinery per read.
      const s = connect({ path, onread: { buffer: Buffer.alloc(64 * 1024), callback: (n: number, buf: Uint8Array) => {
        onChunk(Buffer.from(buf.buffer, buf.byteOffset, n));
        return true; // keep reading
      } } });
      const onError = (e: NodeJS.ErrnoException): void => {
        reject(new PhysmemError(e.code ?? 'ECONNREFUSED', `cannot connect to the physmem daemon`, {
          syscall: 'connect',
          path,
          hint: 'start it with `physmem serve --socket ' + path + '` (and check you may access the socket)',
          cause: e,
        }));
      };
      s.once('connect', () => {
        s.off('error', onError);
        resolve(s);
      });
      s.once('error', onError);
    });
    socket.on('error', () => {
      /* 'close' follows */
    });
    socket.on('close', () => fail(new PhysmemError('ECONNRESET', 'the connection to the physmem daemon closed', { path, hint: 'is the daemon still running?' })));
    const hello = await new Promise<WireOk>((resolve, reject) => {
      const id = pending.add(resolve, reject);
      socket.write(encodeFrame({ op: 'hello', id })); // before any Outbox exists
    }).then(parseHelloReply).catch((e: unknown) => {
      socket.destroy();
      throw e;
    });
    let fd = -1;
    try {
      if (options.mapBlocks !== false) fd = openFile(hello.devicePath, true, false, (code) =>
        code === 'EACCES' || code === 'EPERM' ? 'the daemon serves memory this user may not open: run as the daemon\'s user, or start it with --group' : undefined);
    } catch (e) {
      socket.destroy();
      throw e;
    }
    if (options.unrefWhenIdle) socket.unref();
    return new ServicePool(socket, hello, fd, pending, options.unrefWhenIdle === true);
  }

  // One JSON request.
  #request(msg: { op: string; [k: string]: unknown }): Promise<WireOk> {
    return this.#send((id) => encodeFrame({ ...msg, id }));
  }

  // One request under a fresh id, registered before the frame is queued.
  // Frames queued in one turn of the event loop leave in one write (Outbox).
  #send(encode: (id: number) => Buffer, duringClose = false): Promise<WireOk> {
    if (this.#closed || (this.#closing !== undefined && !duringClose)) return Promise.reject(closed());
    if (this.#socket.destroyed) return Promise.reject(new PhysmemError('ECONNRESET', 'the connection to the physmem daemon is closed', { hint: 'open the pool again' }));
    return new Promise<WireOk>((resolve, reject) => {
      const id = this.#pending.add(resolve, reject);
      this.#lastId = id;
      let frame: Buffer;
      try {
        frame = encode(id);
      } catch (e) {
        this.#pending.remove(id);
        throw e; // rejects this promise
      }
      if (this.#unrefWhenIdle) this.#socket.ref();
      this.#outbox.push(frame);
    });
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Not possible on a daemon's pool: every allocation is a round trip. @throws {PhysmemError} ENOTSUP always. */
  alloc(_size: number, _options?: unknown): never {
    throw new PhysmemError('ENOTSUP', 'synchronous alloc() is not available on a pool served by a daemon', { hint: 'use await pool.allocAsync(size, options)' });
  }

  /**
   * Allocate `size` bytes from the daemon's pool, zeroed. Without `wait` fails
   * at once with ENOMEM when nothing fits (GFP_ATOMIC); with `wait`, queues
   * first come first served at the daemon (GFP_KERNEL), with `timeoutMs`
   * (ETIMEDOUT) and `signal` (ECANCELED). A client may have at most the daemon's
   * `--max-waits` (default 1024) waiting allocations at once; past that, EAGAIN.
   * @throws {PhysmemError} (rejected) ENOTSUP for an option a daemon's pool cannot honour
   *   (`at`, `boundary`, `maxAddress`, `zero: false`, any other unknown key); EINVAL for bad
   *   values; ENOMEM, EAGAIN, ETIMEDOUT, ECANCELED as above; EIO when the daemon cannot journal it.
   */
  allocAsync(size: number, options: ServiceAllocOptions = {}): Promise<ServiceBuffer> {
    try {
      if (typeof options !== 'object' || options === null || Array.isArray(options)) {
        throw invalidArgument(`pool.allocAsync() options must be an object { align, wait, timeoutMs, signal, name }, got ${describeValue(options)}`);
      }
      unsupportedOption(options);
    } catch (e) {
      return Promise.reject(e);
    }
    const { align, wait, timeoutMs, signal, name } = options;
    try {
      if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) throw invalidArgument(`size must be a positive integer, got ${String(size)}`);
      checkSignal(signal, 'pool.allocAsync()');
      if (signal?.aborted) throw new PhysmemError('ECANCELED', 'waiting allocation was aborted', { hint: 'the AbortSignal passed as `signal` fired', cause: signal.reason });
      // Checked here because the binary frame cannot carry a bad value to the daemon (which checks again).
      const wrong = allocFieldError(size, align, wait, timeoutMs, name);
      if (wrong !== undefined) throw invalidArgument(wrong);
      if (this.#fd === -1) throw noMapping();
    } catch (e) {
      return Promise.reject(e);
    }
    const flags = (wait === true ? ALLOC_WAIT : 0) | (timeoutMs !== undefined ? ALLOC_TIMEOUT : 0);
    const request = this.#send((i) => encodeAlloc(i, size, align ?? 0, flags, timeoutMs ?? 0, name));
    // The common case allocates no closure of its own: one promise and the mapping.
    if (signal === undefined) return request.then(this.#mapReply);
    return this.#abortable(request, this.#lastId, signal);
  }

  // An allocation with an AbortSignal: cancel it at the daemon when the signal fires.
  async #abortable(request: Promise<WireOk>, id: number, signal: AbortSignal): Promise<ServiceBuffer> {
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      this.#request({ op: 'cancel', target: id }).catch(() => undefined);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    let reply: BlockReply;
    try {
      reply = blockOf(await request);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    if (aborted) {
      // Granted before the cancel arrived: give it back, the caller gave up.
      this.#giveBack(BigInt(reply.phys));
      throw new PhysmemError('ECANCELED', 'waiting allocation was aborted', { hint: 'the AbortSignal passed as `signal` fired', cause: signal.reason });
    }
    return this.#mapBlock(reply);
  }

  readonly #mapReply = (reply: WireOk): ServiceBuffer => this.#mapBlock(blockOf(reply));

  /**
   * Attach the named buffer `name` created by any client with `allocAsync(size, { name })`:
   * the same memory, mapped here too. Free it with `buf.free()` like any buffer.
   * @throws {PhysmemError} (rejected) ENOENT when no buffer has that name; EEXIST when this client already holds it.
   */
  async lookup(name: string): Promise<ServiceBuffer> {
    if (typeof name !== 'string') throw invalidArgument('name must be a string');
    if (this.#fd === -1) throw noMapping();
    return this.#mapBlock(parseBlockReply(await this.#request({ op: 'lookup', name })));
  }

  // Map the block a reply describes; on failure give it back.
  #mapBlock(reply: BlockInfo): ServiceBuffer {
    const phys = BigInt(reply.phys);
    if (this.#closing !== undefined || this.#closed || this.#fd === -1) {
      // Granted while closing (a wait queued before close()): give it straight back.
      this.#giveBack(phys);
      throw closed();
    }
    const size = reply.size;
    const offset = BigInt(reply.offset);
    let handle = -1;
    let buf: ServiceBuffer;
    try {
      handle = native().mmap(this.#fd, offset, Math.ceil(size / this.#page) * this.#page, true);
      buf = new ServiceBuffer(this, phys, BigInt(reply.bus), size, handle, reply.name, reply.token);
    } catch (e) {
      if (handle !== -1) native().munmap(handle);
      this.#giveBack(phys);
      throw toPhysmemError(e, this.devicePath);
    }
    buf[kLiveIndex] = this.#live.length;
    this.#live.push(buf);
    return buf;
  }

  /**
   * After a daemon restart with a journal (`--state-dir`), take back the blocks these tokens
   * ({@link ServiceBuffer.token}) were returned with, content intact, mapped here again. All or
   * none; at most 128 tokens per call. Blocks nobody reclaims within the daemon's grace period
   * (`--grace-ms`) are released.
   * @throws {PhysmemError} (rejected) ENOENT when a token matches no restored block (unknown,
   *   already reclaimed, or its grace period is over); EINVAL for a malformed token.
   */
  async reclaim(tokens: readonly string[]): Promise<ServiceBuffer[]> {
    if (!isArray(tokens)) throw invalidArgument('tokens must be an array of token strings');
    if (this.#fd === -1) throw noMapping();
    const r = parseReclaimReply(await this.#request({ op: 'reclaim', tokens: [...tokens] }));
    const out: ServiceBuffer[] = [];
    for (const b of r.blocks) out.push(this.#mapBlock(b));
    return out;
  }

  // Return a block this client was granted but will not use; also while closing. Nobody waits for the answer.
  #giveBack(phys: bigint): void {
    this.#send((id) => encodeFree(id, phys), true).catch(() => undefined);
  }

  // Unmap every live buffer (their `bytes` become empty) and empty the list; returns them.
  #unmapAll(): ServiceBuffer[] {
    const bufs = this.#live.splice(0);
    for (const b of bufs) {
      b.unmap();
      b[kLiveIndex] = -1;
    }
    return bufs;
  }

  // Take `buf` out of the live list: swap with the last (no allocation, unlike a Map's delete).
  #forget(buf: ServiceBuffer): void {
    const i = buf[kLiveIndex];
    if (i < 0) return;
    buf[kLiveIndex] = -1;
    const last = this.#live.pop()!;
    if (last !== buf) {
      this.#live[i] = last;
      last[kLiveIndex] = i;
    }
  }

  /** @internal Used by {@link ServiceBuffer.free}. */
  freeBlock(buf: ServiceBuffer): Promise<void> {
    this.#forget(buf);
    const phys = buf.phys;
    const p = this.#send((id) => encodeFree(id, phys)).then(toVoid);
    p.catch(this.#freeFailed); // marks it handled; the warning keeps the error from being lost
    return p;
  }

  #connectionLossReported = false;

  // A free failed: say so once per lost connection, and every other failure each time.
  readonly #freeFailed = (e: unknown): void => {
    const code = e instanceof PhysmemError ? e.code : 'EIO';
    const lost = code === 'ECONNRESET' || code === 'EBADF';
    if (lost && this.#connectionLossReported) return;
    if (lost) this.#connectionLossReported = true;
    process.emitWarning(
      lost
        ? `free() could not reach the physmem daemon (${(e as Error).message}); this and any later unconfirmed frees are the daemon's to reclaim (its quarantine or journal), and this pool's later calls fail with ${code}`
        : `free() was refused by the physmem daemon: ${(e as Error)?.message ?? String(e)}`,
      { type: 'PhysmemFreeWarning', code: 'PHYSMEM_FREE_FAILED' },
    );
  };

  /** Usage of the daemon's pool. */
  async statsAsync(): Promise<ServiceStats> {
    const r = parseStatsReply(await this.#request({ op: 'stats' }));
    return {
      backend: r.backend,
      total: r.total,
      used: r.used,
      free: r.free,
      largestFree: r.largestFree,
      count: r.count,
      waiting: r.waiting,
      busOffset: BigInt(r.busOffset),
      clients: r.clients,
      quarantinedBlocks: r.quarantinedBlocks,
      quarantinedBytes: r.quarantinedBytes,
      orphanBlocks: r.orphanBlocks,
      ranges: r.ranges.map((x) => ({ start: BigInt(x.start), size: x.size })),
    };
  }

  /** Live blocks: every client's when this user is root or the daemon's user, otherwise this client's own. */
  async list(): Promise<ServiceBlock[]> {
    return (await this.listBlocks()).blocks;
  }

  /**
   * Like {@link ServicePool.list}, and says whether the daemon cut the list: one reply holds
   * as many blocks as fit in one frame (64 KiB; several hundred).
   */
  async listBlocks(): Promise<{ blocks: ServiceBlock[]; truncated: boolean }> {
    const r = parseListReply(await this.#request({ op: 'list' }));
    return { blocks: r.blocks, truncated: r.truncated };
  }

  /** Ask the daemon to verify its allocator. @throws {PhysmemError} EIO (rejected) on corruption. */
  async check(): Promise<void> {
    await this.#request({ op: 'check' });
  }

  /** This client's live buffers. */
  buffers(): ServiceBuffer[] {
    return [...this.#live];
  }

  /**
   * Disconnect at once without freeing, as a crash would: every buffer is
   * unmapped here, and the daemon keeps the blocks through its quarantine
   * (a device may still be using them), then reclaims them.
   */
  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unmapAll();
    if (this.#fd !== -1) closeFile(this.#fd);
    this.#socket.destroy();
  }

  /**
   * Free this client's blocks, unmap them, and disconnect. Idempotent.
   * (Disconnecting without freeing, e.g. on a crash, also returns them, after the daemon's quarantine.)
   */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    // From here on new requests are refused (EBADF) and a block granted to a wait that was
    // already queued is given back unmapped (#mapBlock), so nothing outlives the close.
    const bufs = this.#unmapAll();
    await Promise.allSettled(bufs.map((b) => this.#send((id) => encodeFree(id, b.phys), true)));
    this.#closed = true;
    if (this.#fd !== -1) closeFile(this.#fd);
    await new Promise<void>((resolve) => {
      if (this.#socket.destroyed) return resolve();
      this.#socket.once('close', () => resolve());
      this.#outbox.flush();
      this.#socket.end();
    });
  }
}

function toVoid(): void {}

// The reply to an alloc: a binary BLOCK frame arrives already typed and checked (parseBinaryReply
// builds a BlockReply from its fixed layout, phys a bigint); a JSON one is checked here.
function blockOf(r: WireOk): BlockReply {
  return typeof r.phys === 'bigint' ? (r as unknown as BlockReply) : parseBlockReply(r);
}

/**
 * Refuse what a daemon's pool cannot honour, rather than ignore it: a {@link Pool}
 * option (`at`, `boundary`, `maxAddress`, `zero: false`) or any unknown key.
 * @throws {PhysmemError} ENOTSUP naming the option.
 */
function unsupportedOption(options: object): void {
  for (const k in options) {
    switch (k) {
      case 'align':
      case 'wait':
      case 'timeoutMs':
      case 'signal':
      case 'name':
        continue;
      case 'zero':
        // The daemon zeroes every block it hands out (another client's data must never show).
        if ((options as { zero?: unknown }).zero === true || (options as { zero?: unknown }).zero === undefined) continue;
        break;
    }
    if ((options as Record<string, unknown>)[k] === undefined) continue; // { at: undefined } asks for nothing
    const guess = LINKED_ONLY_NAMES.includes(k) ? undefined : closestName(k, SERVICE_ALLOC_NAMES);
    throw new PhysmemError('ENOTSUP', `option '${k.slice(0, 40)}' is not supported by a pool served by a daemon${guess === undefined ? '' : `; did you mean '${guess}'?`}`, {
      hint: k === 'zero' ? 'the daemon zeroes every block it hands out; drop zero: false' : 'a daemon\'s pool takes align, wait, timeoutMs, signal and name; use a linked pool (openPool({ backend })) for the others',
    });
  }
}

function noMapping(): PhysmemError {
  return new PhysmemError('ENOTSUP', 'this connection was opened with mapBlocks: false and cannot map blocks', { hint: 'connect without mapBlocks: false to allocate' });
}

function closed(): PhysmemError {
  return new PhysmemError('EBADF', 'the pool is closed', { hint: 'open it again with openPool({ service })' });
}

/** Open a pool served by a daemon: `openPool({ service })` calls this. */
export function openServicePool(options: ServicePoolOptions): Promise<ServicePool> {
  try {
    checkServicePoolOptions(options);
  } catch (e) {
    return Promise.reject(e);
  }
  return ServicePool.connect(options.service);
}
