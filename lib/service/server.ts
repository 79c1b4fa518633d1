/**
 * The physmem daemon: one pool served to many programs over a Unix socket
 * (`physmem serve`). See docs/service.md.
 *
 * Ownership is simple on purpose: every connection is a client with a fresh
 * id that is never reused, and that id is the allocator's `owner` tag of its
 * blocks, so "is this block yours" is `ownerOf(addr) === client.id`. Named
 * buffers outlive their creator, so they carry a tag no client has and a set
 * of holders instead; the last holder to let go frees them.
 * @module
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { fstatSync, ftruncateSync, lstatSync, mkdirSync, readFileSync, rmSync, rmdirSync, writeSync, chmodSync, chownSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { PhysmemError, hasCode, invalidArgument } from '../errors.js';
import { RangeAllocator, MAX_OWNER } from '../allocator/index.js';
import { native, toPhysmemError, type PeerCredentials } from '../native.js';
import type { DevmemBackendOptions } from '../backends/devmem.js';
import { FrameDecoder, MAX_FRAME, Outbox, PROTOCOL_VERSION, encodeBlock, encodeDone, encodeFrame, requestParsers, type AllocRequest, type DecodeResult, type Reply, type Request } from './protocol.js';
import { WaitQueue, type WaitNode } from '../wait-queue.js';
import { journalPath, newToken, readJournal, writeJournal, type JournalBlock, type JournalData } from './journal.js';

// Owner tag of named buffers: they outlive their creator, so no client's freeAll may take them. Client ids start at 1.
const NAMED_OWNER = 0;
// Owner tag of blocks restored from the journal that nobody has reclaimed yet: no client id reaches it.
const ORPHAN_OWNER = MAX_OWNER;

// A journaled block waiting (after a restart) for the client holding its token.
interface Orphan {
  readonly addr: number;
  readonly size: number;
  readonly pid: number;
  readonly token: string;
  readonly name: string | undefined;
  readonly quarantined: boolean; // its client was already gone: nobody may reclaim it
}

interface Named {
  readonly name: string;
  readonly addr: number;
  readonly size: number;
  readonly holders: Set<number>; // client ids; the block is freed when the last one lets go
}
import { openDevmemMemory, openFakeFileMemory, type ServiceMemory } from './memory.js';

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

// What to do about a request the daemon cannot read: the message before it says which rule it broke.
const FRAME_HINT = 'Send requests as docs/service.md (Protocol) describes, or use the physmem client (openPool({ service }))';

/** With a journal: how long a change that only releases blocks may wait for its journal write (ms). */
const RELEASE_WRITE_MS = 20;

/** Holders of one named buffer listed in a `list` reply (the rest are counted in `holderCount`). */
const MAX_LISTED_HOLDERS = 32;

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

interface Client {
  readonly id: number;
  readonly socket: Socket;
  readonly cred: PeerCredentials;
  readonly blocks: Map<number, number>; // address -> bytes asked for
  readonly waits: Map<number, WaitNode<Waiter>>; // its waiting allocations by request id
  readonly decoder: FrameDecoder<Request>;
  readonly outbox: Outbox;
  /** Requests held back while its replies drain (see #holdBack); undefined when reading. */
  queue: DecodeResult<Request>[] | undefined;
  gone: boolean;
}

interface Waiter {
  readonly client: Client;
  readonly req: AllocRequest;
  timer: NodeJS.Timeout | undefined;
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
  readonly #alloc: RangeAllocator;
  readonly #clients = new Map<number, Client>();
  readonly #quarantine = new Map<number, { timer: NodeJS.Timeout; blocks: number; bytes: number; pid: number; list: Map<number, number> }>();
  readonly #waiters = new WaitQueue<Waiter>();
  readonly #maxWaits: number;
  readonly #named = new Map<string, Named>();
  readonly #namedAt = new Map<number, Named>(); // by address
  readonly #quarantineMs: number;
  readonly #log: (line: string) => void;
  readonly #releaseLock: () => void;
  readonly #page: number;
  readonly #largestRange: number;
  readonly #journal: string | undefined; // path of journal.json, when there is a state directory
  readonly #tokens = new Map<number, string>(); // address -> token of every live block (orphans aside)
  readonly #orphans = new Map<string, Orphan>(); // by token
  readonly #orphanNames = new Set<string>(); // names of restored named buffers not yet reclaimed
  #graceTimer: NodeJS.Timeout | undefined;
  #graceMs = 0;
  // Group commit (with a journal): blocks granted in one turn of the event loop go into one
  // journal write, and their replies leave only once it is on disk.
  #granted: { c: Client; req: AllocRequest; addr: number; token: string }[] = [];
  readonly #uncommitted = new Set<number>(); // addresses in #granted
  #commitScheduled = false;
  // Lookups of a named buffer whose grant is not yet in the journal: answered after the commit.
  #lookups: { c: Client; id: number; addr: number; size: number; name: string }[] = [];
  // Changes that only release blocks are written with the next commit, or after RELEASE_WRITE_MS.
  #releaseTimer: NodeJS.Timeout | undefined;
  #nextClient = 1;
  #closed: Promise<void> | undefined;

  /** @internal Use {@link startServer}. */
  constructor(server: Server, memory: ServiceMemory, o: { socket: string; releaseLock: () => void; quarantineMs: number; log: (line: string) => void; journal?: string; restored?: JournalData; graceMs?: number; maxWaits?: number }) {
    this.#server = server;
    this.#memory = memory;
    this.socketPath = o.socket;
    this.#releaseLock = o.releaseLock;
    this.#quarantineMs = o.quarantineMs;
    this.#maxWaits = o.maxWaits ?? DEFAULT_MAX_WAITS;
    this.#log = o.log;
    this.#page = native().pageSize();
    this.#alloc = new RangeAllocator(memory.ranges.map((r) => ({ start: r.start, size: r.size })));
    this.#largestRange = Math.max(...memory.ranges.map((r) => r.size));
    this.#journal = o.journal;
    if (o.restored !== undefined && o.journal !== undefined) this.#restore(o.journal, o.restored, o.graceMs ?? DEFAULT_GRACE_MS);
    server.on('connection', (s) => this.#accept(s));
  }

  // Put every journaled block back into the allocator, owned by nobody, until reclaimed or the grace period ends.
  #restore(path: string, j: JournalData, graceMs: number): void {
    const total = this.#alloc.stats().total;
    if (j.backend !== this.#memory.name || j.total !== total) {
      throw new PhysmemError('EIO', `the journal describes a ${j.total}-byte ${j.backend} pool, this daemon serves a ${total}-byte ${this.#memory.name} pool`, {
        path,
        hint: 'restart with the same --backend and --size as before, or move the journal away (its blocks are then lost)',
      });
    }
    for (const b of j.blocks) {
      const addr = Number(b.phys);
      let got = -1;
      try {
        got = this.#alloc.alloc(this.#rounded(b.size), { at: addr, owner: ORPHAN_OWNER });
      } catch {
        /* reported below */
      }
      if (got !== addr) {
        throw new PhysmemError('EIO', `the journal's block at 0x${addr.toString(16)} (${b.size} bytes) lies outside the pool or overlaps another`, {
          path,
          hint: 'the journal does not match this memory: restart with the same options as before, or move the journal away (its blocks are then lost)',
        });
      }
      this.#orphans.set(b.token, { addr, size: b.size, pid: b.pid, token: b.token, name: b.name, quarantined: b.quarantined === true });
      if (b.name !== undefined) this.#orphanNames.add(b.name);
    }
    this.#graceMs = graceMs;
  }

  /** @internal Called by {@link startServer} once the start can no longer fail: starts the grace period of restored blocks. */
  start(): void {
    if (this.#orphans.size === 0 || this.#graceTimer !== undefined) return;
    this.#log(`event=restore blocks=${this.#orphans.size} graceMs=${this.#graceMs}`);
    this.#graceTimer = setTimeout(() => this.#releaseOrphans(), this.#graceMs);
  }

  /** @internal For tests: wait-queue entries looked at so far (serving a request must not walk the queue). */
  get queueVisits(): number {
    return this.#waiters.visited;
  }

  #releaseOrphans(): void {
    this.#graceTimer = undefined;
    let bytes = 0;
    const n = this.#orphans.size;
    // The memory is zeroed when handed out again (#grant), like any freed block.
    for (const o of this.#orphans.values()) bytes += this.#alloc.free(o.addr);
    this.#orphans.clear();
    this.#orphanNames.clear();
    this.#log(`event=release-orphans blocks=${n} bytes=${bytes}`);
    this.#persistSoon();
    this.#serveWaiters();
  }

  #rounded(size: number): number {
    return Math.ceil(size / this.#page) * this.#page;
  }

  // The table as the journal keeps it: every block still allocated, whoever holds it.
  #table(): JournalData {
    const blocks: JournalBlock[] = [];
    const tok = (a: number) => this.#tokens.get(a) ?? '';
    for (const c of this.#clients.values()) {
      for (const [a, size] of c.blocks) if (!this.#namedAt.has(a)) blocks.push({ phys: String(a), size, token: tok(a), pid: c.cred.pid });
    }
    for (const n of this.#named.values()) {
      blocks.push({ phys: String(n.addr), size: n.size, token: tok(n.addr), pid: this.#clients.get([...n.holders][0])?.cred.pid ?? 0, name: n.name });
    }
    for (const q of this.#quarantine.values()) for (const [a, size] of q.list) blocks.push({ phys: String(a), size, token: tok(a), pid: q.pid, quarantined: true });
    for (const o of this.#orphans.values()) {
      const b: JournalBlock = { phys: String(o.addr), size: o.size, token: o.token, pid: o.pid };
      if (o.name !== undefined) b.name = o.name;
      if (o.quarantined) b.quarantined = true;
      blocks.push(b);
    }
    return { version: 1, backend: this.#memory.name, total: this.#alloc.stats().total, blocks };
  }

  // Write the journal; throws. Used where a block is handed out: the reply must not go before the journal has it.
  #persist(): void {
    if (this.#journal !== undefined) writeJournal(this.#journal, this.#table());
  }

  // Journal a change that only released blocks, soon rather than now: if that write is late or
  // fails, the old journal only lists a block too many, which a restart would hold for the grace
  // period and release: safe, so a failure is logged and the daemon goes on.
  #persistSoon(): void {
    if (this.#journal === undefined) return;
    // A journal that still lists a released block is safe (a restart holds it for the grace
    // period, then releases it), so this write can wait for the next commit: one fsync'd
    // snapshot per allocation and per free would cap the daemon at a few hundred pairs/s.
    if (this.#commitScheduled || this.#releaseTimer !== undefined) return;
    this.#releaseTimer = setTimeout(() => {
      this.#releaseTimer = undefined;
      if (this.#closed === undefined) this.#writeOrLog();
    }, RELEASE_WRITE_MS);
  }

  #writeOrLog(): void {
    try {
      this.#persist();
    } catch (e) {
      this.#log(`event=journal-error message=${JSON.stringify(String((e as Error)?.message ?? e))}`);
    }
  }

  // Write the journal once for every block granted this turn, then send their replies;
  // if the write fails, take them back and tell each client (EIO).
  #commit(): void {
    this.#commitScheduled = false;
    if (this.#closed !== undefined) return; // close() wrote the journal; the table is gone now
    if (this.#releaseTimer !== undefined) {
      clearTimeout(this.#releaseTimer);
      this.#releaseTimer = undefined;
    }
    const batch = this.#granted;
    const lookups = this.#lookups;
    this.#granted = [];
    this.#lookups = [];
    this.#uncommitted.clear();
    try {
      this.#persist();
    } catch (e) {
      const err = new PhysmemError('EIO', `cannot write the journal: ${(e as Error)?.message ?? String(e)}`, { hint: 'check the --state-dir file system (full? read-only?)' });
      this.#log(`event=journal-error message=${JSON.stringify(err.message)}`);
      // Not in the journal: a restart would hand them out again, so their clients must not get them.
      for (const g of batch) {
        if (this.#tokens.get(g.addr) !== g.token) continue; // already gone again
        this.#ungrant(g.c, g.addr);
        this.#send(g.c, errorReply(g.req.id, err));
      }
      for (const l of lookups) this.#send(l.c, errorReply(l.id, err));
      if (this.#waiters.length !== 0) this.#serveWaiters();
      return;
    }
    for (const g of batch) this.#reply(g.c, g.req, g.addr, g.token);
    for (const l of lookups) {
      // Still held (nobody freed it meanwhile)?
      if (this.#namedAt.get(l.addr)?.holders.has(l.c.id)) this.#send(l.c, this.#blockReply(l.id, l.addr, l.size, l.name));
      else this.#send(l.c, errorReply(l.id, new PhysmemError('ENOENT', `the buffer '${l.name}' was freed before it could be attached`, { hint: 'look it up again' })));
    }
  }

  // Undo a grant whose journal write failed: nobody got a reply for it (lookups of it wait for
  // the commit too), so the block returns to the pool at once, named or not, held or quarantined.
  #ungrant(c: Client, addr: number): void {
    const n = this.#namedAt.get(addr);
    if (n !== undefined) {
      for (const h of n.holders) this.#clients.get(h)?.blocks.delete(addr);
      this.#named.delete(n.name);
      this.#namedAt.delete(addr);
    }
    c.blocks.delete(addr);
    for (const q of this.#quarantine.values()) {
      const size = q.list.get(addr);
      if (size !== undefined) {
        q.list.delete(addr);
        q.blocks--;
        q.bytes -= size;
      }
    }
    this.#tokens.delete(addr);
    this.#alloc.free(addr);
  }

  #reply(c: Client, req: AllocRequest, addr: number, token: string): void {
    if (c.gone) return; // its blocks are in quarantine, journaled as such
    if (this.#tokens.get(addr) !== token || !c.blocks.has(addr)) {
      // Freed (by a client guessing its address) before the journal had it.
      this.#send(c, errorReply(req.id, new PhysmemError('EAGAIN', 'the block was freed before it was granted', { hint: 'allocate again' })));
      return;
    }
    if (!req.binary) this.#send(c, this.#blockReply(req.id, addr, req.size, req.name));
    else this.#sendFrame(c, encodeBlock(req.id, addr, BigInt(addr) + this.#memory.busOffset, this.#memory.fileOffset(addr), req.size, token, req.name));
  }

  /** Number of connected clients. */
  get clientCount(): number {
    return this.#clients.size;
  }

  /**
   * Verify the allocator's invariants and that every live block belongs to a
   * connected or quarantined client. @throws {PhysmemError} EIO on corruption.
   */
  check(): void {
    this.#alloc.check();
    let owned = 0;
    for (const c of this.#clients.values()) {
      for (const addr of c.blocks.keys()) {
        const n = this.#namedAt.get(addr);
        if (n !== undefined ? !n.holders.has(c.id) || this.#alloc.ownerOf(addr) !== NAMED_OWNER : this.#alloc.ownerOf(addr) !== c.id) {
          throw new PhysmemError('EIO', `client ${c.id} holds 0x${addr.toString(16)} but the allocator disagrees`);
        }
        if (n === undefined) owned++;
      }
    }
    for (const n of this.#named.values()) {
      if (n.holders.size === 0 || this.#alloc.ownerOf(n.addr) !== NAMED_OWNER) throw new PhysmemError('EIO', `named buffer '${n.name}' is not held or not allocated`);
    }
    owned += this.#named.size;
    for (const q of this.#quarantine.values()) owned += q.blocks;
    for (const o of this.#orphans.values()) {
      if (this.#alloc.ownerOf(o.addr) !== ORPHAN_OWNER) throw new PhysmemError('EIO', `restored block 0x${o.addr.toString(16)} is not allocated to nobody`);
    }
    owned += this.#orphans.size;
    const count = this.#alloc.stats().count;
    if (owned !== count) throw new PhysmemError('EIO', `clients and quarantine hold ${owned} blocks but the allocator has ${count}`);
  }

  /** Pool usage, clients and quarantine. */
  stats(): { backend: string; total: number; used: number; free: number; largestFree: number; count: number; waiting: number; busOffset: string; clients: number; quarantinedBlocks: number; quarantinedBytes: number; orphanBlocks: number; ranges: { start: string; size: number }[] } {
    const s = this.#alloc.stats();
    let qb = 0;
    let qbytes = 0;
    for (const q of this.#quarantine.values()) {
      qb += q.blocks;
      qbytes += q.bytes;
    }
    return {
      backend: this.#memory.name,
      total: s.total,
      used: s.used,
      free: s.free,
      largestFree: s.largestFree,
      count: s.count,
      waiting: this.#waiters.length,
      busOffset: this.#memory.busOffset.toString(),
      clients: this.#clients.size,
      quarantinedBlocks: qb,
      quarantinedBytes: qbytes,
      orphanBlocks: this.#orphans.size,
      ranges: this.#memory.ranges.map((r) => ({ start: String(r.start), size: r.size })),
    };
  }

  /** Every live block: connected clients' and quarantined ones, in address order. */
  blocks(): ServiceBlock[] {
    const out: ServiceBlock[] = [];
    for (const c of this.#clients.values()) {
      for (const [a, size] of c.blocks) if (!this.#namedAt.has(a)) out.push({ phys: String(a), size, client: c.id, pid: c.cred.pid, quarantined: false });
    }
    for (const n of this.#named.values()) {
      const holders = [...n.holders];
      out.push({ phys: String(n.addr), size: n.size, client: holders[0], pid: this.#clients.get(holders[0])?.cred.pid ?? 0, quarantined: false, name: n.name, holders });
    }
    for (const [id, q] of this.#quarantine) for (const [a, size] of q.list) out.push({ phys: String(a), size, client: id, pid: q.pid, quarantined: true });
    for (const o of this.#orphans.values()) {
      const b: ServiceBlock = { phys: String(o.addr), size: o.size, client: 0, pid: o.pid, quarantined: true, orphan: true };
      if (o.name !== undefined) b.name = o.name;
      out.push(b);
    }
    return out.sort((x, y) => Number(BigInt(x.phys) - BigInt(y.phys)));
  }

  /**
   * Stop: refuse new connections, disconnect clients, free everything, remove
   * the socket, the memory file and the lock file. Idempotent. With a journal, the journal and the
   * memory file stay: its blocks survive the restart like after a crash.
   */
  close(): Promise<void> {
    if (this.#closed === undefined && (this.#commitScheduled || this.#releaseTimer !== undefined)) {
      // Write what is pending while the table is still whole: the blocks survive the restart.
      if (this.#releaseTimer !== undefined) clearTimeout(this.#releaseTimer);
      this.#releaseTimer = undefined;
      this.#writeOrLog();
    }
    this.#closed ??= new Promise<void>((resolve) => {
      this.#log(`event=shutdown clients=${this.#clients.size}`);
      this.#server.close(() => resolve());
      for (const w of this.#waiters.drain()) if (w.timer) clearTimeout(w.timer);
      for (const c of this.#clients.values()) {
        c.gone = true;
        c.socket.destroy();
      }
      this.#clients.clear();
      for (const q of this.#quarantine.values()) clearTimeout(q.timer);
      this.#quarantine.clear();
      if (this.#graceTimer) clearTimeout(this.#graceTimer);
      this.#alloc.freeAll();
      this.#memory.close();
      if (this.#memory.name === 'fake' && this.#journal === undefined) rmSync(this.#memory.devicePath, { force: true });
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
    const client: Client = { id: this.#nextClient++, socket, cred, blocks: new Map(), waits: new Map(), decoder: new FrameDecoder(requestParsers), outbox: new Outbox(socket), queue: undefined, gone: false };
    this.#clients.set(client.id, client);
    this.#log(`event=connect client=${client.id} pid=${cred.pid} uid=${cred.uid}`);
    socket.on('data', (chunk: Buffer) => this.#onData(client, chunk));
    socket.on('error', () => {
      /* reset by peer etc.: 'close' follows */
    });
    socket.on('close', () => this.#disconnect(client));
  }

  #send(client: Client, reply: Reply): void {
    if (!client.gone) client.outbox.push(encodeFrame(reply));
  }

  // A binary reply frame (BLOCK, DONE).
  #sendFrame(client: Client, frame: Buffer): void {
    if (!client.gone) client.outbox.push(frame);
  }

  #onData(client: Client, chunk: Buffer): void {
    const results = client.decoder.push(chunk);
    if (client.queue !== undefined) client.queue.push(...results); // keep the order
    else this.#process(client, results, 0);
  }

  // Handle results[from..]. A client whose unread replies pass REPLY_BACKLOG is not read
  // any further (not even the rest of this chunk) until they drain: otherwise a client
  // that sends without reading could make the daemon queue replies without bound.
  #process(client: Client, results: DecodeResult<Request>[], from: number): void {
    for (let i = from; i < results.length; i++) {
      if (client.gone) return;
      if (client.outbox.backlog > REPLY_BACKLOG) {
        this.#holdBack(client, results, i);
        return;
      }
      const r = results[i];
      if (r.kind === 'fatal') {
        this.#log(`event=framing-error client=${client.id} code=${r.code}`);
        this.#send(client, { id: 0, ok: false, code: r.code, message: `${r.code}: ${r.message}; closing this connection. ${FRAME_HINT}` });
        client.outbox.flush();
        client.socket.end();
        return;
      }
      if (r.kind === 'invalid') {
        this.#send(client, { id: r.id, ok: false, code: r.code, message: `${r.code}: ${r.message}. ${FRAME_HINT}` });
        continue;
      }
      try {
        this.#handle(client, r.message);
      } catch (e) {
        // Validation happens before any state change, so an error here leaves the state as it was.
        this.#send(client, errorReply(r.message.id, e));
      }
    }
  }

  #holdBack(client: Client, results: DecodeResult<Request>[], from: number): void {
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

  #handle(c: Client, req: Request): void {
    switch (req.op) {
      case 'hello':
        this.#send(c, {
          id: req.id,
          ok: true,
          version: PROTOCOL_VERSION,
          client: c.id,
          pid: c.cred.pid,
          uid: c.cred.uid,
          daemonPid: process.pid,
          backend: this.#memory.name,
          devicePath: this.#memory.devicePath,
          busOffset: this.#memory.busOffset.toString(),
          pageSize: this.#page,
        });
        return;
      case 'alloc':
        return this.#allocRequest(c, req);
      case 'lookup': {
        const n = this.#named.get(req.name);
        if (n === undefined) throw new PhysmemError('ENOENT', `no buffer named '${req.name}'`, { hint: 'create it with allocAsync(size, { name })' });
        if (n.holders.has(c.id)) throw new PhysmemError('EEXIST', `this client already holds '${req.name}'`, { hint: 'use the buffer you have' });
        n.holders.add(c.id);
        c.blocks.set(n.addr, n.size);
        // Created this turn and not yet in the journal: answer once it is.
        if (this.#uncommitted.has(n.addr)) this.#lookups.push({ c, id: req.id, addr: n.addr, size: n.size, name: n.name });
        else this.#send(c, this.#blockReply(req.id, n.addr, n.size, n.name));
        return;
      }
      case 'reclaim':
        return this.#reclaim(c, req.id, req.tokens);
      case 'free':
        return this.#free(c, req.id, req.phys, req.binary === true);
      case 'cancel': {
        const node = c.waits.get(req.target);
        if (node !== undefined) this.#dropWaiter(node, new PhysmemError('ECANCELED', 'waiting allocation was cancelled', { hint: 'the client cancelled it' }));
        this.#send(c, { id: req.id, ok: true, cancelled: node !== undefined });
        return;
      }
      case 'stats':
        this.#send(c, { id: req.id, ok: true, ...this.stats() });
        return;
      case 'list': {
        const all = c.cred.uid === 0 || c.cred.uid === (process.getuid?.() ?? 0);
        const blocks = this.blocks().filter((b) => all || (!b.quarantined && (b.client === c.id || (b.holders?.includes(c.id) ?? false))));
        // Keep the reply inside one frame: entries are added while they fit (names and holder
        // lists make their size vary), and the reply says when the list was cut.
        const out: ServiceBlock[] = [];
        let bytes = 256; // the envelope, with room to spare
        for (const b of blocks) {
          if (b.holders !== undefined && b.holders.length > MAX_LISTED_HOLDERS) {
            b.holderCount = b.holders.length;
            b.holders = b.holders.slice(0, MAX_LISTED_HOLDERS);
          }
          bytes += JSON.stringify(b).length + 1;
          if (bytes > MAX_FRAME) break;
          out.push(b);
        }
        this.#send(c, { id: req.id, ok: true, blocks: out, truncated: out.length < blocks.length });
        return;
      }
      case 'check':
        this.check();
        this.#send(c, { id: req.id, ok: true });
        return;
    }
  }

  // Round up to whole pages at page alignment: a client maps its block
  // itself, and mmap works in pages, so a block must never share a page.
  #tryAlloc(c: Client, req: AllocRequest): number {
    const rounded = this.#rounded(req.size);
    const align = Math.max(req.align ?? this.#page, this.#page);
    if (align > this.#largestRange) throw invalidArgument(`align ${align} is larger than the pool`);
    return this.#alloc.alloc(rounded, { align, owner: req.name === undefined ? c.id : NAMED_OWNER });
  }

  #grant(c: Client, req: AllocRequest, addr: number): void {
    if (req.name !== undefined) {
      if (this.#named.has(req.name)) {
        // Taken while this request waited.
        this.#alloc.free(addr);
        this.#send(c, errorReply(req.id, nameTaken(req.name)));
        return;
      }
      const n: Named = { name: req.name, addr, size: req.size, holders: new Set([c.id]) };
      this.#named.set(n.name, n);
      this.#namedAt.set(addr, n);
    }
    this.#memory.zero(addr, this.#rounded(req.size));
    c.blocks.set(addr, req.size);
    const token = newToken();
    this.#tokens.set(addr, token);
    if (this.#journal === undefined) {
      this.#reply(c, req, addr, token);
      return;
    }
    this.#granted.push({ c, req, addr, token });
    this.#uncommitted.add(addr);
    if (!this.#commitScheduled) {
      this.#commitScheduled = true;
      process.nextTick(() => this.#commit());
    }
  }

  #reclaim(c: Client, id: number, tokens: string[]): void {
    // All or none, checked before any change.
    for (const [i, t] of tokens.entries()) {
      const o = this.#orphans.get(t);
      if (o === undefined || o.quarantined) {
        throw new PhysmemError('ENOENT', `no restored block waits for token ${i + 1} of ${tokens.length}`, {
          hint: 'a token is valid once, after a daemon restart, within its grace period (--grace-ms)',
        });
      }
      if (o.name !== undefined && this.#named.has(o.name)) throw nameTaken(o.name);
    }
    const blocks: Record<string, unknown>[] = [];
    for (const t of tokens) {
      const o = this.#orphans.get(t)!;
      this.#orphans.delete(t);
      if (o.name !== undefined) this.#orphanNames.delete(o.name);
      // Re-own it: free and take the same range back at once (nothing runs in between).
      this.#alloc.free(o.addr);
      const got = this.#alloc.alloc(this.#rounded(o.size), { at: o.addr, owner: o.name === undefined ? c.id : NAMED_OWNER });
      if (got !== o.addr) throw new PhysmemError('EIO', `internal error: could not re-own 0x${o.addr.toString(16)}`);
      if (o.name !== undefined) {
        const n: Named = { name: o.name, addr: o.addr, size: o.size, holders: new Set([c.id]) };
        this.#named.set(n.name, n);
        this.#namedAt.set(n.addr, n);
      }
      c.blocks.set(o.addr, o.size);
      this.#tokens.set(o.addr, t);
      const { id: _id, ok: _ok, ...info } = this.#blockReply(0, o.addr, o.size, o.name) as Record<string, unknown>;
      blocks.push(info);
    }
    if (this.#orphans.size === 0 && this.#graceTimer) {
      clearTimeout(this.#graceTimer);
      this.#graceTimer = undefined;
    }
    this.#persistSoon();
    this.#log(`event=reclaim-tokens client=${c.id} pid=${c.cred.pid} blocks=${tokens.length}`);
    this.#send(c, { id, ok: true, blocks });
  }

  #blockReply(id: number, addr: number, size: number, name: string | undefined): Reply {
    const r: Reply = {
      id,
      ok: true,
      phys: String(addr),
      bus: (BigInt(addr) + this.#memory.busOffset).toString(),
      size,
      offset: this.#memory.fileOffset(addr).toString(),
    };
    const token = this.#tokens.get(addr);
    if (token !== undefined) r.token = token;
    if (name !== undefined) r.name = name;
    return r;
  }

  // Drop client `c`'s hold on a named buffer; true when it was the last (the caller frees the block).
  #letGo(c: Client, n: Named): boolean {
    n.holders.delete(c.id);
    if (n.holders.size !== 0) return false;
    this.#named.delete(n.name);
    this.#namedAt.delete(n.addr);
    return true;
  }

  #noMemory(size: number): PhysmemError {
    const s = this.#alloc.stats();
    return new PhysmemError('ENOMEM', `cannot allocate ${size} bytes: largest free block is ${s.largestFree} bytes, ${s.free} of ${s.total} bytes free`, {
      hint: 'free buffers, wait with allocAsync(size, { wait: true }), or give the daemon more memory',
    });
  }

  #allocRequest(c: Client, req: AllocRequest): void {
    if (req.size > this.#largestRange) throw this.#noMemory(req.size);
    if (req.name !== undefined && (this.#named.has(req.name) || this.#orphanNames.has(req.name))) throw nameTaken(req.name);
    // First come, first served: nobody overtakes an allocation already waiting.
    if (this.#waiters.length === 0 || !req.wait) {
      const addr = this.#tryAlloc(c, req);
      if (addr >= 0) return this.#grant(c, req, addr);
      if (!req.wait) throw this.#noMemory(req.size);
    }
    if (c.waits.has(req.id)) throw invalidArgument(`request id ${req.id} is already waiting`);
    // Each client's share of the queue is capped: one client cannot fill the daemon's memory with waits.
    if (c.waits.size >= this.#maxWaits) {
      throw new PhysmemError('EAGAIN', `this client already has ${c.waits.size} allocations waiting (the most one client may queue)`, {
        hint: 'wait for some of them to be served before queueing more, or start the daemon with a larger --max-waits',
      });
    }
    const w: Waiter = { client: c, req, timer: undefined };
    const node = this.#waiters.push(w);
    c.waits.set(req.id, node);
    if (req.timeoutMs !== undefined) {
      w.timer = setTimeout(() => {
        this.#dropWaiter(node, new PhysmemError('ETIMEDOUT', `no ${req.size} bytes became free within ${req.timeoutMs} ms`, {
          hint: 'free buffers sooner, raise timeoutMs, or give the daemon more memory',
        }));
      }, req.timeoutMs);
    }
  }

  // Take a waiter out of the queue and its client's map (O(1)); false when it was no longer queued.
  #unqueue(node: WaitNode<Waiter>): boolean {
    const w = node.value;
    if (w.timer) clearTimeout(w.timer);
    w.client.waits.delete(w.req.id);
    return this.#waiters.remove(node);
  }

  #dropWaiter(node: WaitNode<Waiter>, e: PhysmemError): void {
    if (!this.#unqueue(node)) return;
    this.#send(node.value.client, errorReply(node.value.req.id, e));
    this.#serveWaiters(); // the head may have been holding back smaller requests
  }

  #serveWaiters(): void {
    this.#waiters.serve(this.#serveOne);
  }

  // The head of the queue: true when answered (granted or failed), false when it must go on waiting.
  readonly #serveOne = (w: Waiter): boolean => {
    let addr: number;
    try {
      addr = this.#tryAlloc(w.client, w.req);
    } catch (e) {
      this.#unqueue(w.client.waits.get(w.req.id)!);
      this.#send(w.client, errorReply(w.req.id, e));
      return true;
    }
    if (addr < 0) return false; // strict FIFO: the head waits, and so does everyone behind it
    this.#unqueue(w.client.waits.get(w.req.id)!);
    this.#grant(w.client, w.req, addr);
    return true;
  };

  #free(c: Client, id: number, phys: bigint, binary: boolean): void {
    const addr = phys <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(phys) : -1;
    if (!c.blocks.has(addr)) {
      if (addr >= 0 && this.#alloc.ownerOf(addr) >= 0) {
        this.#log(`event=free-refused client=${c.id} pid=${c.cred.pid} phys=0x${addr.toString(16)}`);
        throw new PhysmemError('EPERM', `the block at physical 0x${addr.toString(16)} belongs to another client`, { hint: 'free only blocks this connection allocated' });
      }
      throw new PhysmemError('EINVAL', `no block of this client starts at physical 0x${phys.toString(16)}`, { hint: 'pass the exact phys of a live buffer (double free?)' });
    }
    c.blocks.delete(addr);
    const n = this.#namedAt.get(addr);
    if (n === undefined || this.#letGo(c, n)) {
      this.#alloc.free(addr);
      this.#tokens.delete(addr);
      this.#persistSoon();
    }
    if (binary) this.#sendFrame(c, encodeDone(id));
    else this.#send(c, { id, ok: true });
    if (this.#waiters.length !== 0) this.#serveWaiters();
  }

  #disconnect(c: Client): void {
    if (!this.#clients.delete(c.id)) return;
    c.gone = true;
    for (const node of [...c.waits.values()]) this.#unqueue(node);
    // Named buffers others still hold stay; the rest (own blocks, named ones this client held last) go to quarantine.
    const list = new Map<number, number>();
    for (const [addr, size] of c.blocks) {
      const named = this.#namedAt.get(addr);
      if (named === undefined || this.#letGo(c, named)) list.set(addr, size);
    }
    const n = list.size;
    this.#log(`event=disconnect client=${c.id} pid=${c.cred.pid} blocks=${n}`);
    // Its waits are gone: one of them may have been the head holding back requests that fit now.
    this.#serveWaiters();
    if (n === 0) return;
    let bytes = 0;
    for (const size of list.values()) bytes += size;
    // The blocks stay allocated (owner = this client's id) until the timer
    // fires: a device may still be writing into them.
    const timer = setTimeout(() => {
      this.#quarantine.delete(c.id);
      let freed = 0;
      for (const addr of list.keys()) {
        freed += this.#alloc.free(addr);
        this.#tokens.delete(addr);
      }
      this.#persistSoon();
      this.#log(`event=reclaim client=${c.id} pid=${c.cred.pid} blocks=${n} bytes=${freed}`);
      this.#serveWaiters();
    }, this.#quarantineMs);
    this.#quarantine.set(c.id, { timer, blocks: n, bytes, pid: c.cred.pid, list });
    this.#persistSoon(); // now marked quarantined: not reclaimable after a restart
  }
}

function nameTaken(name: string): PhysmemError {
  return new PhysmemError('EEXIST', `a buffer named '${name}' already exists`, { hint: 'attach it with lookup(name), or choose another name' });
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
  if (typeof options !== 'object' || options === null || typeof options.socket !== 'string' || options.socket === '') {
    throw invalidArgument('options.socket must be a path');
  }
  if (options.stateDir !== undefined && (typeof options.stateDir !== 'string' || options.stateDir === '')) throw invalidArgument('options.stateDir must be a directory path');
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  if (!Number.isInteger(graceMs) || graceMs < 0 || graceMs > 2 ** 31 - 1) throw invalidArgument(`graceMs must be an integer in [0, 2^31 - 1], got ${String(graceMs)}`);
  const quarantineMs = options.quarantineMs ?? DEFAULT_QUARANTINE_MS;
  if (!Number.isInteger(quarantineMs) || quarantineMs < 0 || quarantineMs > 2 ** 31 - 1) throw invalidArgument(`quarantineMs must be an integer in [0, 2^31 - 1], got ${String(quarantineMs)}`);
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
