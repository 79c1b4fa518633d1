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
import { connect, type Socket } from 'node:net';
import { PhysmemError, invalidArgument } from '../errors.js';
import { Mapping, closeFile, openFile } from '../mapping.js';
import { FrameDecoder, MAX_ID, encodeFrame, parseReply, type OkReply, type Reply } from './protocol.js';
import type { ServiceBlock } from './server.js';
import type { PoolStats } from '../pool.js';
import type { BackendName } from '../backends/types.js';

/** Options of a pool served by a daemon. */
export interface ServicePoolOptions {
  /** Path of the daemon's Unix socket. */
  service: string;
}

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
 * Usage of a daemon's pool, from {@link ServicePool.statsAsync}: the figures
 * of {@link PoolStats} (used and count include quarantined blocks; used is
 * page-rounded) with the daemon's own, and its ranges without per-range use.
 */
export interface ServiceStats extends Omit<PoolStats, 'ranges'> {
  /** Connected clients. */
  clients: number;
  /** Blocks of disconnected clients waiting out their quarantine. */
  quarantinedBlocks: number;
  /** Their bytes (as asked for). */
  quarantinedBytes: number;
  /** Blocks restored from the journal after a daemon restart that no client has reclaimed yet. */
  orphanBlocks: number;
  /** The physical ranges the daemon manages. */
  ranges: { start: bigint; size: number }[];
}

interface Pending {
  resolve: (r: OkReply) => void;
  reject: (e: PhysmemError) => void;
}

function replyError(r: Reply & { ok: false }): PhysmemError {
  // The daemon's message already reads "CODE: detail. hint"; keep it as the detail.
  return new PhysmemError(r.code, r.message.replace(/^[A-Z]+: /, ''));
}

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
  readonly #pool: ServicePool;
  readonly #mapping: Mapping;
  readonly #view: number;

  /** @internal Created by {@link ServicePool.allocAsync}. */
  constructor(pool: ServicePool, phys: bigint, bus: bigint, size: number, mapping: Mapping, view: number, name?: string, token?: string) {
    this.#pool = pool;
    this.token = token;
    this.name = name;
    this.phys = phys;
    this.bus = bus;
    this.size = size;
    this.#mapping = mapping;
    this.#view = view;
    this.bytes = new Uint8Array(mapping.buffer(view)!);
  }

  /** True once freed. */
  get freed(): boolean {
    return this.bytes.byteLength === 0;
  }

  /**
   * Return the block to the daemon. `bytes` becomes zero-length at once (and
   * the block is unmapped); the Promise settles when the daemon confirms.
   * For a named buffer this drops this client's hold; the last holder's free frees it.
   * @throws {PhysmemError} EINVAL (rejected) if already freed.
   */
  free(): Promise<void> {
    if (this.bytes.byteLength === 0) {
      return Promise.reject(new PhysmemError('EINVAL', `buffer at 0x${this.phys.toString(16)} was already freed`, { hint: 'free each buffer once' }));
    }
    this.unmap();
    return this.#pool.freeBlock(this);
  }

  /** @internal Detach `bytes` and unmap; idempotent. */
  unmap(): void {
    if (this.#mapping.closed) return;
    this.#mapping.release(this.#view);
    this.#mapping.close();
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
  readonly #pending: Map<number, Pending>;
  readonly #page: number;
  readonly #unrefWhenIdle: boolean; // compat: an idle connection must not keep the program alive
  readonly #live = new Map<bigint, ServiceBuffer>();
  readonly #fd: number;
  #nextId = 2; // 1 was hello
  #closed = false;

  private constructor(socket: Socket, hello: OkReply, fd: number, pending: Map<number, Pending>, unrefWhenIdle: boolean) {
    this.#unrefWhenIdle = unrefWhenIdle;
    this.#socket = socket;
    this.#pending = pending; // the map the socket's data handler resolves
    this.#page = hello.pageSize as number;
    this.pageSize = this.#page;
    this.backend = hello.backend as BackendName;
    this.busOffset = BigInt(hello.busOffset as string);
    this.clientId = hello.client as number;
    this.daemonPid = hello.daemonPid as number;
    this.devicePath = hello.devicePath as string;
    this.#fd = fd;
  }

  /**
   * Connect to the daemon at `path` and open its memory file.
   * @throws {PhysmemError} ENOENT / ECONNREFUSED when no daemon listens there; EACCES when the
   *   socket or the memory file is not accessible to this user.
   */
  static async connect(path: string, options: { unrefWhenIdle?: boolean } = {}): Promise<ServicePool> {
    if (typeof path !== 'string' || path === '') throw invalidArgument('service must be the path of a physmem daemon socket');
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', (e: NodeJS.ErrnoException) => {
        reject(new PhysmemError(e.code ?? 'ECONNREFUSED', `cannot connect to the physmem daemon`, {
          syscall: 'connect',
          path,
          hint: 'start it with `physmem serve --socket ' + path + '` (and check you may access the socket)',
          cause: e,
        }));
      });
    });
    const pending = new Map<number, Pending>();
    const decoder = new FrameDecoder(parseReply);
    const fail = (e: PhysmemError) => {
      for (const p of pending.values()) p.reject(e);
      pending.clear();
    };
    socket.on('data', (chunk: Buffer) => {
      for (const r of decoder.push(chunk)) {
        if (r.kind !== 'message') {
          fail(new PhysmemError(r.code, r.message, { hint: 'the daemon and this client may be different versions' }));
          socket.destroy();
          return;
        }
        const reply = r.message;
        const p = pending.get(reply.id);
        if (p === undefined) continue; // id 0: a framing complaint about us, followed by close
        pending.delete(reply.id);
        if (pending.size === 0 && options.unrefWhenIdle) socket.unref();
        if (reply.ok) p.resolve(reply);
        else p.reject(replyError(reply));
      }
    });
    socket.on('error', () => {
      /* 'close' follows */
    });
    socket.on('close', () => fail(new PhysmemError('ECONNRESET', 'the connection to the physmem daemon closed', { path, hint: 'is the daemon still running?' })));
    const hello = await new Promise<OkReply>((resolve, reject) => {
      pending.set(1, { resolve, reject });
      socket.write(encodeFrame({ op: 'hello', id: 1 }));
    }).catch((e: unknown) => {
      socket.destroy();
      throw e;
    });
    let fd: number;
    try {
      fd = openFile(hello.devicePath as string, true, false, (code) =>
        code === 'EACCES' || code === 'EPERM' ? 'the daemon serves memory this user may not open: run as the daemon\'s user, or start it with --group' : undefined);
    } catch (e) {
      socket.destroy();
      throw e;
    }
    if (options.unrefWhenIdle) socket.unref();
    return new ServicePool(socket, hello, fd, pending, options.unrefWhenIdle === true);
  }

  // One request: a fresh id (wrapping below MAX_ID), registered before the write.
  #request(msg: { op: string; [k: string]: unknown }): Promise<OkReply> {
    if (this.#closed) return Promise.reject(closed());
    if (this.#socket.destroyed) return Promise.reject(new PhysmemError('ECONNRESET', 'the connection to the physmem daemon is closed', { hint: 'open the pool again' }));
    const id = this.#nextId;
    this.#nextId = id >= MAX_ID ? 1 : id + 1;
    return new Promise<OkReply>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      if (this.#unrefWhenIdle) this.#socket.ref();
      this.#socket.write(encodeFrame({ ...msg, id }));
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
   * (ETIMEDOUT) and `signal` (ECANCELED).
   */
  async allocAsync(size: number, options: ServiceAllocOptions = {}): Promise<ServiceBuffer> {
    const { align, wait, timeoutMs, signal, name } = options;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) throw invalidArgument(`size must be a positive integer, got ${String(size)}`);
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArgument('signal must be an AbortSignal');
    if (signal?.aborted) throw new PhysmemError('ECANCELED', 'waiting allocation was aborted', { hint: 'the AbortSignal passed as `signal` fired', cause: signal.reason });
    const msg: { op: string; size: number; align?: number; wait?: boolean; timeoutMs?: number; name?: string } = { op: 'alloc', size };
    if (name !== undefined) msg.name = name;
    if (align !== undefined) msg.align = align;
    if (wait !== undefined) msg.wait = wait;
    if (timeoutMs !== undefined) msg.timeoutMs = timeoutMs;
    const id = this.#nextId; // the id #request is about to use, for cancel
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      this.#request({ op: 'cancel', target: id }).catch(() => undefined);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    let reply: OkReply;
    try {
      reply = await this.#request(msg);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    const phys = BigInt(reply.phys as string);
    if (aborted) {
      // Granted before the cancel arrived: give it back, the caller gave up.
      this.#request({ op: 'free', phys: phys.toString() }).catch(() => undefined);
      throw new PhysmemError('ECANCELED', 'waiting allocation was aborted', { hint: 'the AbortSignal passed as `signal` fired', cause: signal?.reason });
    }
    return this.#mapBlock(reply);
  }

  /**
   * Attach the named buffer `name` created by any client with `allocAsync(size, { name })`:
   * the same memory, mapped here too. Free it with `buf.free()` like any buffer.
   * @throws {PhysmemError} (rejected) ENOENT when no buffer has that name; EEXIST when this client already holds it.
   */
  async lookup(name: string): Promise<ServiceBuffer> {
    if (typeof name !== 'string') throw invalidArgument('name must be a string');
    return this.#mapBlock(await this.#request({ op: 'lookup', name }));
  }

  // Map the block a reply describes; on failure give it back.
  #mapBlock(reply: OkReply): ServiceBuffer {
    const phys = BigInt(reply.phys as string);
    const size = reply.size as number;
    const offset = BigInt(reply.offset as string);
    let mapping: Mapping;
    try {
      mapping = Mapping.map(this.#fd, offset, Math.ceil(size / this.#page) * this.#page, true, this.devicePath);
    } catch (e) {
      this.#request({ op: 'free', phys: phys.toString() }).catch(() => undefined);
      throw e;
    }
    const buf = new ServiceBuffer(this, phys, BigInt(reply.bus as string), size, mapping, mapping.view(0, size), reply.name as string | undefined, reply.token as string | undefined);
    this.#live.set(phys, buf);
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
    if (!Array.isArray(tokens)) throw invalidArgument('tokens must be an array of token strings');
    const r = await this.#request({ op: 'reclaim', tokens: [...tokens] });
    const out: ServiceBuffer[] = [];
    for (const b of r.blocks as OkReply[]) out.push(this.#mapBlock(b));
    return out;
  }

  /** @internal Used by {@link ServiceBuffer.free}. */
  async freeBlock(buf: ServiceBuffer): Promise<void> {
    this.#live.delete(buf.phys);
    await this.#request({ op: 'free', phys: buf.phys.toString() });
  }

  /** Usage of the daemon's pool. */
  async statsAsync(): Promise<ServiceStats> {
    const r = await this.#request({ op: 'stats' });
    return {
      backend: r.backend as BackendName,
      total: r.total as number,
      used: r.used as number,
      free: r.free as number,
      largestFree: r.largestFree as number,
      count: r.count as number,
      waiting: r.waiting as number,
      busOffset: BigInt(r.busOffset as string),
      clients: r.clients as number,
      quarantinedBlocks: r.quarantinedBlocks as number,
      quarantinedBytes: r.quarantinedBytes as number,
      orphanBlocks: (r.orphanBlocks as number | undefined) ?? 0,
      ranges: (r.ranges as { start: string; size: number }[]).map((x) => ({ start: BigInt(x.start), size: x.size })),
    };
  }

  /** Live blocks: every client's when this user is root or the daemon's user, otherwise this client's own. */
  async list(): Promise<ServiceBlock[]> {
    const r = await this.#request({ op: 'list' });
    return r.blocks as ServiceBlock[];
  }

  /** Ask the daemon to verify its allocator. @throws {PhysmemError} EIO (rejected) on corruption. */
  async check(): Promise<void> {
    await this.#request({ op: 'check' });
  }

  /** This client's live buffers. */
  buffers(): ServiceBuffer[] {
    return [...this.#live.values()];
  }

  /**
   * Disconnect at once without freeing, as a crash would: every buffer is
   * unmapped here, and the daemon keeps the blocks through its quarantine
   * (a device may still be using them), then reclaims them.
   */
  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const b of this.#live.values()) b.unmap();
    this.#live.clear();
    closeFile(this.#fd);
    this.#socket.destroy();
  }

  /**
   * Free this client's blocks, unmap them, and disconnect. Idempotent.
   * (Disconnecting without freeing, e.g. on a crash, also returns them, after the daemon's quarantine.)
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    const bufs = [...this.#live.values()];
    this.#live.clear();
    for (const b of bufs) b.unmap();
    await Promise.allSettled(bufs.map((b) => this.#request({ op: 'free', phys: b.phys.toString() })));
    this.#closed = true;
    closeFile(this.#fd);
    await new Promise<void>((resolve) => {
      if (this.#socket.destroyed) return resolve();
      this.#socket.once('close', () => resolve());
      this.#socket.end();
    });
  }
}

function closed(): PhysmemError {
  return new PhysmemError('EBADF', 'the pool is closed', { hint: 'open it again with openPool({ service })' });
}

/** Open a pool served by a daemon: `openPool({ service })` calls this. */
export function openServicePool(options: ServicePoolOptions): Promise<ServicePool> {
  return ServicePool.connect(options.service);
}
