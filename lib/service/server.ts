/**
 * The physmem daemon's transport: one pool served to many programs over a
 * Unix socket (`physmem serve`). See docs/service.md.
 *
 * This module owns sockets, framing and back-pressure, the daemon's locks
 * and its start; what is handed out to whom (grants, named buffers,
 * quarantine, waits, the journal) is policy.ts, which keeps every block in
 * one table. Every connection is a client with a fresh id that is never
 * reused.
 * @module
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { fstatSync, ftruncateSync, lstatSync, mkdirSync, readFileSync, rmSync, rmdirSync, writeSync, chmodSync, chownSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { PhysmemError, hasCode, invalidArgument } from '../errors.js';
import { native, toPhysmemError, type PeerCredentials } from '../native.js';
import { DEVMEM_OPTION_NAMES, type DevmemBackendOptions } from '../backends/devmem.js';
import { FrameDecoder, Outbox, encodeFrame, requestParsers, type DecodeResult, type Reply, type Request, type ServiceBlock } from './protocol.js';
import type { WaitNode } from '../wait-queue.js';
import { journalPath, readJournal, type JournalData } from './journal.js';
import { ServicePolicy, type Peer, type PolicyStats, type Waiter } from './policy.js';
import { openDevmemMemory, openFakeFileMemory, removeLeftoverMemoryFiles, type ServiceMemory } from './memory.js';
import { checkTimeoutMs, optionNames, optionsChecker } from '../internal/validate.js';

export type { ServiceBlock } from './protocol.js';

/** Options of {@link startServer} (and of `physmem serve`). */
export interface ServeOptions {
  /** Path of the Unix socket. Its directory is created (mode 0700, 0750 with `group`) if missing. */
  socket: string;
  /** Memory to serve: `'fake'` (a file next to the socket; default) or `'devmem'`. */
  backend?: 'fake' | 'devmem';
  /** Size of the fake memory in bytes. Default 64 MiB. */
  size?: number;
  /** Options of the devmem backend. */
  devmem?: DevmemBackendOptions;
  /**
   * The journal's directory (created mode 0700 if missing): the table of live blocks is kept in
   * `journal.json` there, so a daemon killed and restarted with the same directory keeps every
   * block, and clients take theirs back with {@link ServicePool.reclaim}. Without it, a restart loses every block.
   */
  stateDir?: string;
  /** With `stateDir`: how long after a restart the restored blocks wait to be reclaimed before they are released. Default 10,000 ms. */
  graceMs?: number;
  /** How long a disconnected client's blocks stay allocated before reuse (a device may still DMA into them). Default 1000 ms. */
  quarantineMs?: number;
  /** Group allowed to connect: socket mode 0660 and that group, instead of 0600. */
  group?: string;
  /** Where log lines go (one per event). Default: stderr. */
  log?: (line: string) => void;
  /**
   * Most allocations one client may have waiting (`wait: true`) at once; past it, its next
   * waiting allocation fails with EAGAIN. Default {@link DEFAULT_MAX_WAITS}.
   */
  maxWaits?: number;
}

const checkServeDevmemOptions = optionsChecker('startServer() devmem', DEVMEM_OPTION_NAMES);
const checkServeOptions = optionsChecker('startServer()', optionNames<ServeOptions>({ socket: true, backend: true, size: true, devmem: true, stateDir: true, graceMs: true, quarantineMs: true, group: true, log: true, maxWaits: true }));

// What to do about a request the daemon cannot read: the message before it says which rule it broke.
const FRAME_HINT = 'Send requests as docs/service.md (Protocol) describes, or use the physmem client (openPool({ service }))';

/** Reply bytes a client may leave unread before the daemon stops reading its requests. */
const REPLY_BACKLOG = 1 << 20;

/** Default of {@link ServeOptions.maxWaits}: allocations one client may have waiting at once. */
export const DEFAULT_MAX_WAITS = 1024;
/** Default quarantine of a disconnected client's blocks, in ms. */
export const DEFAULT_QUARANTINE_MS = 1000;
/** Default grace period of restored blocks after a restart with a journal, in ms. */
export const DEFAULT_GRACE_MS = 10_000;
/** Default size of the fake memory a daemon serves: 64 MiB. */
export const SERVICE_DEFAULT_SIZE = 64 * 1024 * 1024;

/** A connection: the policy's {@link Peer} plus what the transport keeps. */
class Connection implements Peer {
  readonly held = new Set<number>();
  readonly waits = new Map<number, WaitNode<Waiter>>();
  readonly decoder = new FrameDecoder<Request>(requestParsers);
  readonly outbox: Outbox;
  /** Requests held back while its replies drain (see #holdBack); undefined when reading. */
  queue: DecodeResult<Request>[] | undefined;
  gone = false;

  constructor(
    readonly id: number,
    readonly socket: Socket,
    readonly cred: PeerCredentials,
  ) {
    this.outbox = new Outbox(socket);
  }

  send(reply: Reply): void {
    if (!this.gone) this.outbox.push(encodeFrame(reply));
  }

  sendFrame(frame: Buffer): void {
    if (!this.gone) this.outbox.push(frame);
  }
}

/**
 * The file descriptor behind a connected `net.Socket` (a Unix socket), for
 * SO_PEERCRED. Node exposes it as `socket._handle.fd` on Linux; this is the
 * one place that relies on it.
 * @throws {PhysmemError} ENOTSUP when this Node.js does not expose it.
 */
export function socketFd(socket: Socket): number {
  const handle: unknown = Reflect.get(socket, '_handle');
  const fd: unknown = typeof handle === 'object' && handle !== null ? Reflect.get(handle, 'fd') : undefined;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
    throw new PhysmemError('ENOTSUP', 'cannot get the file descriptor of a Unix socket connection (socket._handle.fd)', {
      hint: `physmem serve needs Node.js >= 20 on Linux; this is ${process.version} on ${process.platform}`,
    });
  }
  return fd;
}

function groupId(name: string): number {
  if (/^\d+$/.test(name)) return Number(name);
  let text = '';
  try {
    text = readFileSync('/etc/group', 'utf8');
  } catch {
    /* no /etc/group: treated as not found */
  }
  for (const line of text.split('\n')) {
    const [n, , gid] = line.split(':');
    if (n === name && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new PhysmemError('ENOENT', `no group named '${name}' in /etc/group`, { hint: 'create it (groupadd) or pass a numeric gid' });
}

/**
 * Create a directory (the socket's, the state directory), or accept an existing one only if it
 * is a real directory (not a symlink) owned by us (or root) that nobody else can write.
 * @returns true when this call created it (a refused start removes it again).
 */
function safeDirectory(dir: string, mode: number, gid: number | undefined, what: string): boolean {
  try {
    mkdirSync(dir, { mode });
    if (gid !== undefined) chownSync(dir, process.getuid?.() ?? 0, gid);
    chmodSync(dir, mode);
    return true;
  } catch (e) {
    if (!hasCode(e, 'EEXIST')) throw toPhysmemError(e, dir, `create the parent directory first, or choose another ${what}`);
  }
  const st = lstatSync(dir);
  const uid = process.getuid?.() ?? 0;
  if (!st.isDirectory()) throw new PhysmemError('ENOTDIR', `${dir} is not a directory (or is a symlink)`, { path: dir, hint: `remove it or choose another ${what}` });
  if (st.uid !== uid && st.uid !== 0) throw new PhysmemError('EPERM', `the directory is owned by uid ${st.uid}`, { path: dir, hint: 'use a directory you own' });
  // Group-writable is refused even with --group: a member could replace the socket or the lock file.
  if ((st.mode & 0o022) !== 0) {
    throw new PhysmemError('EPERM', `the directory is writable by others (mode ${(st.mode & 0o777).toString(8)})`, {
      path: dir,
      hint: `chmod it 0700 (0750 with --group), or choose a directory only you can write`,
    });
  }
  return false;
}

/** A daemon lock taken by {@link takeLock}. */
interface DaemonLock {
  /** Write our pid into the file (for people reading it; the lock is what counts). After a successful start only. */
  stamp(): void;
  /** Shutdown: unlink the file while still holding the lock, then unlock. */
  release(): void;
  /** Refused start: unlock, and unlink the file only if this start created it (otherwise it is left as it was). */
  abandon(): void;
}

/**
 * Take a daemon lock: a POSIX lock (fcntl) on `path` (`<socket>.lock`, or `daemon.lock` in the
 * state directory), which the kernel drops when the daemon dies however it dies, so a crashed
 * daemon never leaves a stale lock behind and two daemons starting at once cannot both win (a pid
 * file checked and replaced by hand could).
 * @param what - what the lock guards, for the EBUSY message ('serves this socket').
 * @throws {PhysmemError} EBUSY naming the daemon (pid) that holds it.
 */
function takeLock(path: string, what: string, otherwise: string): DaemonLock {
  const n = native();
  for (let attempt = 0; attempt < 3; attempt++) {
    let existed = true;
    try {
      lstatSync(path);
    } catch {
      existed = false;
    }
    let fd: number;
    try {
      fd = n.lockFileOpen(path);
    } catch (e) {
      throw toPhysmemError(e, path, `remove the file if it is not a lock file of yours, or ${otherwise}`);
    }
    let conflict: ReturnType<typeof n.lockRange>;
    try {
      conflict = n.lockRange(fd, 0n, 1n);
    } catch (e) {
      n.lockFileClose(fd);
      throw toPhysmemError(e, path);
    }
    if (conflict !== null) {
      n.lockFileClose(fd);
      // Never unlink here: the holder locks this very file.
      const pid = conflict.pid;
      throw new PhysmemError('EBUSY', `another physmem daemon (${pid > 0 ? `pid ${pid}` : 'in another PID namespace'}) already ${what}`, {
        path,
        hint: `stop it first${pid > 0 ? ` (kill ${pid})` : ''}, or ${otherwise}`,
      });
    }
    // A daemon shutting down unlinks the file: if that happened between our open and our
    // lock, we hold a lock on a file nobody else will open. Check, and retry on the new one.
    let same = false;
    try {
      const held = fstatSync(fd);
      const now = lstatSync(path);
      same = held.ino === now.ino && held.dev === now.dev;
    } catch {
      /* gone: retry */
    }
    if (same) {
      const unlock = () => {
        n.unlockRange(fd, 0n, 1n);
        n.lockFileClose(fd);
      };
      return {
        stamp: () => {
          try {
            ftruncateSync(fd, 0);
            writeSync(fd, `${process.pid}\n`, 0);
          } catch {
            /* informational only */
          }
        },
        release: () => {
          rmSync(path, { force: true });
          unlock();
        },
        abandon: () => {
          if (!existed) rmSync(path, { force: true });
          unlock();
        },
      };
    }
    n.unlockRange(fd, 0n, 1n);
    n.lockFileClose(fd);
  }
  throw new PhysmemError('EBUSY', 'could not take the daemon lock file', { path, hint: 'another daemon is starting or stopping; try again' });
}

function errorReply(id: number, e: unknown): Reply {
  if (e instanceof PhysmemError) return { id, ok: false, code: e.code, message: e.message };
  return { id, ok: false, code: 'EIO', message: `EIO: internal error: ${(e as Error)?.message ?? String(e)}` };
}

/** A running daemon. Create with {@link startServer}. */
export class ServiceServer {
  /** Path of the socket served. */
  readonly socketPath: string;
  readonly #server: Server;
  readonly #memory: ServiceMemory;
  readonly #policy: ServicePolicy;
  readonly #clients = new Map<number, Connection>();
  readonly #log: (line: string) => void;
  readonly #releaseLock: () => void;
  #nextClient = 1;
  #closed: Promise<void> | undefined;

  /**
   * @internal Use {@link startServer}.
   * @throws {PhysmemError} EIO when the restored journal does not match the memory.
   */
  constructor(server: Server, memory: ServiceMemory, o: { socket: string; releaseLock: () => void; quarantineMs: number; log: (line: string) => void; journal?: string; restored?: JournalData; graceMs?: number; maxWaits?: number }) {
    this.#server = server;
    this.#memory = memory;
    this.socketPath = o.socket;
    this.#releaseLock = o.releaseLock;
    this.#log = o.log;
    this.#policy = new ServicePolicy(memory, {
      quarantineMs: o.quarantineMs,
      maxWaits: o.maxWaits ?? DEFAULT_MAX_WAITS,
      log: o.log,
      journal: o.journal,
      restored: o.journal === undefined ? undefined : o.restored,
      graceMs: o.graceMs ?? DEFAULT_GRACE_MS,
    });
    server.on('connection', (s) => this.#accept(s));
  }

  /** @internal Called by {@link startServer} once the start can no longer fail: starts the grace period of restored blocks. */
  start(): void {
    this.#policy.start();
  }

  /** @internal For tests: wait-queue entries looked at so far (serving a request must not walk the queue). */
  get queueVisits(): number {
    return this.#policy.queueVisits;
  }

  /** Number of connected clients. */
  get clientCount(): number {
    return this.#clients.size;
  }

  /**
   * Verify the allocator's invariants and that the block table, its indexes and the
   * allocator agree. @throws {PhysmemError} EIO on corruption.
   */
  check(): void {
    this.#policy.check();
  }

  /** Pool usage, clients and quarantine. */
  stats(): PolicyStats {
    return this.#policy.stats();
  }

  /** Every live block: connected clients', quarantined and restored ones, in address order. */
  blocks(): ServiceBlock[] {
    return this.#policy.blocks();
  }

  /**
   * Stop: refuse new connections, disconnect clients, free everything, remove
   * the socket, the memory file and the lock file. Idempotent. With a journal, the journal and the
   * memory file stay: its blocks survive the restart like after a crash.
   */
  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      this.#log(`event=shutdown clients=${this.#clients.size}`);
      this.#policy.close(); // writes what is pending first, while the table is whole
      this.#server.close(() => resolve());
      for (const c of this.#clients.values()) {
        c.gone = true;
        c.socket.destroy();
      }
      this.#clients.clear();
      if (this.#memory.name === 'fake' && !this.#policy.journaled) rmSync(this.#memory.devicePath, { force: true });
      this.#releaseLock();
    });
    return this.#closed;
  }

  #accept(socket: Socket): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    let cred: PeerCredentials;
    try {
      cred = native().peerCredentials(socketFd(socket));
    } catch (e) {
      this.#log(`event=reject reason=${JSON.stringify(String((e as Error)?.message ?? e))}`);
      socket.destroy();
      return;
    }
    const client = new Connection(this.#nextClient++, socket, cred);
    this.#clients.set(client.id, client);
    this.#policy.connect(client);
    this.#log(`event=connect client=${client.id} pid=${cred.pid} uid=${cred.uid}`);
    socket.on('data', (chunk: Buffer) => this.#onData(client, chunk));
    socket.on('error', () => {
      /* reset by peer etc.: 'close' follows */
    });
    socket.on('close', () => this.#disconnect(client));
  }

  #disconnect(c: Connection): void {
    if (!this.#clients.delete(c.id)) return;
    c.gone = true;
    this.#policy.disconnect(c);
  }

  #onData(client: Connection, chunk: Buffer): void {
    const results = client.decoder.push(chunk);
    if (client.queue !== undefined) client.queue.push(...results); // keep the order
    else this.#process(client, results, 0);
  }

  // Handle results[from..]. A client whose unread replies pass REPLY_BACKLOG is not read
  // any further (not even the rest of this chunk) until they drain: otherwise a client
  // that sends without reading could make the daemon queue replies without bound.
  #process(client: Connection, results: DecodeResult<Request>[], from: number): void {
    for (let i = from; i < results.length; i++) {
      if (client.gone) return;
      if (client.outbox.backlog > REPLY_BACKLOG) {
        this.#holdBack(client, results, i);
        return;
      }
      const r = results[i];
      if (r.kind === 'fatal') {
        this.#log(`event=framing-error client=${client.id} code=${r.code}`);
        client.send({ id: 0, ok: false, code: r.code, message: `${r.code}: ${r.message}; closing this connection. ${FRAME_HINT}` });
        client.outbox.flush();
        client.socket.end();
        return;
      }
      if (r.kind === 'invalid') {
        client.send({ id: r.id, ok: false, code: r.code, message: `${r.code}: ${r.message}. ${FRAME_HINT}` });
        continue;
      }
      try {
        this.#policy.handle(client, r.message);
      } catch (e) {
        // Validation happens before any state change, so an error here leaves the state as it was.
        client.send(errorReply(r.message.id, e));
      }
    }
  }

  #holdBack(client: Connection, results: DecodeResult<Request>[], from: number): void {
    const s = client.socket;
    s.pause();
    client.queue = results.slice(from);
    client.outbox.flush();
    const go = (): void => {
      const queue = client.queue!;
      client.queue = undefined;
      if (client.gone) return;
      this.#process(client, queue, 0); // may hold back again
      if (!client.gone && client.queue === undefined) s.resume();
    };
    // 'drain' comes only after a write() that returned false; otherwise the kernel took it all.
    if (s.writableNeedDrain) s.once('drain', go);
    else setImmediate(go);
  }
}

function defaultLog(line: string): void {
  process.stderr.write(line + '\n');
}

/**
 * What is at the socket path: nothing (false), or a socket nobody listens on, left by a dead
 * daemon (true: replace it). Anything else is refused and left alone.
 * @throws {PhysmemError} ENOTSOCK when it is not a socket (a regular file, a directory, a
 *   symlink...); EEXIST when a program listens on it (or whether one does cannot be told).
 */
async function staleSocket(socket: string): Promise<boolean> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(socket).isSocket();
  } catch (e) {
    if (hasCode(e, 'ENOENT')) return false;
    throw toPhysmemError(e, socket, 'choose another --socket path');
  }
  if (!isSocket) {
    throw new PhysmemError('ENOTSOCK', 'the --socket path exists and is not a socket; it is left alone', {
      path: socket,
      hint: 'choose another --socket path, or remove that file yourself if it is not needed',
    });
  }
  // We hold the daemon lock, so no physmem daemon serves it; but another program might.
  const code = await new Promise<string>((resolve) => {
    const c = connect(socket);
    c.once('connect', () => {
      c.destroy();
      resolve('connected');
    });
    c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'EIO'));
  });
  if (code === 'ECONNREFUSED') return true; // nobody listens: a dead daemon's
  if (code === 'ENOENT') return false; // gone meanwhile
  throw new PhysmemError('EEXIST', code === 'connected' ? 'a program (not a physmem daemon holding the lock) listens on the --socket path; it is left alone' : `the --socket path is a socket that cannot be probed (${code}); it is left alone`, {
    path: socket,
    hint: 'stop that program or choose another --socket path',
  });
}

/**
 * Start a daemon serving one pool on a Unix socket.
 *
 * A refused start changes nothing on disk: everything is checked (locks, journal, memory file,
 * what is at the socket path) before anything is created, replaced or removed, and what it
 * created itself (directories, lock files, a new memory file) is removed again.
 * @throws {PhysmemError} EBUSY when another daemon serves this socket or uses this state directory;
 *   ENOTSOCK / EEXIST when the socket path holds something other than a dead daemon's socket;
 *   EPERM/ENOTDIR for an unsafe socket directory or state directory; EIO when the journal in
 *   `stateDir` is unreadable or does not match the memory (it refuses rather than forget live
 *   blocks); EINVAL for bad options; the backend's errors.
 */
export async function startServer(options: ServeOptions): Promise<ServiceServer> {
  checkServeOptions(options);
  checkServeDevmemOptions(options.devmem);
  if (typeof options !== 'object' || options === null || typeof options.socket !== 'string' || options.socket === '') {
    throw invalidArgument('options.socket must be a path');
  }
  if (options.stateDir !== undefined && (typeof options.stateDir !== 'string' || options.stateDir === '')) throw invalidArgument('options.stateDir must be a directory path');
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  checkTimeoutMs(graceMs, 'startServer()', false, 'graceMs');
  const quarantineMs = options.quarantineMs ?? DEFAULT_QUARANTINE_MS;
  checkTimeoutMs(quarantineMs, 'startServer()', false, 'quarantineMs');
  const maxWaits = options.maxWaits ?? DEFAULT_MAX_WAITS;
  if (!Number.isSafeInteger(maxWaits) || maxWaits < 0) throw invalidArgument(`maxWaits must be a non-negative integer, got ${String(maxWaits)}`);
  const backend = options.backend ?? 'fake';
  if (backend !== 'fake' && backend !== 'devmem') throw invalidArgument(`backend must be 'fake' or 'devmem', got ${String(backend)}`);
  const log = options.log ?? defaultLog;
  const stamp = (line: string) => log(`${new Date().toISOString()} physmem[${process.pid}] ${line}`);
  const gid = options.group === undefined ? undefined : groupId(options.group);
  const socket = options.socket;
  const dir = dirname(socket);
  // Undone in reverse order if the start is refused.
  const undo: (() => void)[] = [];
  let memory: ServiceMemory | undefined;
  let server: Server | undefined;
  try {
    if (safeDirectory(dir, gid === undefined ? 0o700 : 0o750, gid, '--socket path')) undo.push(() => rmdirQuietly(dir));
    const socketLock = takeLock(join(dir, `${basename(socket)}.lock`), 'serves this socket', 'choose another --socket path');
    undo.push(() => socketLock.abandon());
    let stateLock: DaemonLock | undefined;
    let journal: string | undefined;
    let restored: JournalData | undefined;
    if (options.stateDir !== undefined) {
      const stateDir = options.stateDir;
      // Whoever can write the journal decides what is free: it gets the same care as the socket directory.
      if (safeDirectory(stateDir, 0o700, undefined, '--state-dir')) undo.push(() => rmdirQuietly(stateDir));
      // Two daemons on one journal would overwrite each other's table: one of them is refused.
      const lock = takeLock(join(stateDir, STATE_LOCK), 'uses this --state-dir', 'choose another --state-dir');
      stateLock = lock;
      undo.push(() => lock.abandon());
      journal = journalPath(stateDir);
      restored = readJournal(journal);
    }
    const stale = await staleSocket(socket);
    // With live blocks in the journal, the fake memory file holds their content: reuse it as it is.
    const keepMemory = backend === 'fake' && restored !== undefined && restored.blocks.length > 0;
    const memPath = join(dir, `${basename(socket)}.mem`);
    const fileMode = gid === undefined ? 0o600 : 0o660;
    if (backend === 'fake') {
      try {
        memory = openFakeFileMemory({ path: memPath, size: options.size ?? SERVICE_DEFAULT_SIZE, mode: fileMode, gid, keep: keepMemory });
      } catch (e) {
        if (keepMemory && hasCode(e, 'ENOENT')) {
          throw new PhysmemError('EIO', `the journal lists ${restored!.blocks.length} live blocks but the memory file that holds them is missing`, {
            path: memPath,
            hint: `move the journal ${journal} away to start with an empty pool (its blocks are then lost)`,
          });
        }
        throw e;
      }
    } else memory = openDevmemMemory(options.devmem ?? {});
    server = createServer({ allowHalfOpen: false });
    // Checks the journal against the memory (backend, size, every block's place) before anything changes.
    const s = new ServiceServer(server, memory, {
      socket,
      releaseLock: () => {
        socketLock.release();
        stateLock?.release();
      },
      quarantineMs,
      log: stamp,
      journal,
      restored,
      graceMs,
      maxWaits,
    });
    // Everything checked: from here on, replace what a dead daemon left.
    if (stale) rmSync(socket, { force: true });
    memory.publish?.();
    for (const name of removeLeftoverMemoryFiles(memPath)) stamp(`removed ${name}, left by a daemon that died while starting`);
    const srv = server;
    // umask so the socket is never more open than its final mode, even briefly.
    const oldMask = process.umask(gid === undefined ? 0o177 : 0o117);
    try {
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(socket, () => {
          srv.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(oldMask);
    }
    if (gid !== undefined) chownSync(socket, process.getuid?.() ?? 0, gid);
    chmodSync(socket, fileMode);
    server.on('error', (e) => stamp(`event=error message=${JSON.stringify(e.message)}`));
    socketLock.stamp();
    stateLock?.stamp();
    s.start();
    stamp(`event=start socket=${socket} backend=${memory.name} total=${s.stats().total} device=${memory.devicePath} quarantineMs=${quarantineMs}${journal === undefined ? '' : ` journal=${journal} restored=${s.stats().orphanBlocks}`}`);
    return s;
  } catch (e) {
    server?.close();
    memory?.close(); // a new fake memory file not yet published is removed; a kept one stays as it was
    for (const f of undo.reverse()) f();
    throw toPhysmemError(e, socket);
  }
}

/** Name of the state directory's lock file. */
export const STATE_LOCK = 'daemon.lock';

function rmdirQuietly(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    /* not empty (not ours to clear) or gone */
  }
}
