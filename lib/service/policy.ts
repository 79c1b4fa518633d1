/**
 * The daemon's policy: what it hands out to whom. Grants, frees, named
 * buffers, the quarantine, waits, restored blocks and the journal, kept in
 * one block table. The transport (server.ts) owns sockets, framing and
 * back-pressure and hands this module decoded requests from a {@link Peer}.
 *
 * **One place for a block's state.** Every live block has exactly one
 * {@link BlockRecord} in the table (address -> record): whether it is held,
 * quarantined or restored-and-orphaned, who holds it, its token and name.
 * The allocator's owner tag mirrors the record (a holder's client id, or
 * {@link NAMED_OWNER} / {@link ORPHAN_OWNER}; {@link RangeAllocator.setOwner}
 * moves it in place), and {@link ServicePolicy.check} verifies that the two
 * agree. The other maps are indexes into the table (by name, by token of a
 * restored block, each peer's held addresses), updated in the same places.
 * @module
 */
import { PhysmemError, invalidArgument } from '../errors.js';
import { RangeAllocator, MAX_OWNER } from '../allocator/index.js';
import { native, type PeerCredentials } from '../native.js';
import { WaitQueue, type WaitNode } from '../wait-queue.js';
import { MAX_FRAME, PROTOCOL_VERSION, encodeBlock, encodeDone, type AllocRequest, type BlockInfo, type BlockReply, type Reply, type Request, type ServiceBlock, type WireStats } from './protocol.js';
import { newToken, writeJournal, type JournalBlock, type JournalData } from './journal.js';
import type { ServiceMemory } from './memory.js';
import { hex } from '../internal/validate.js';

/** Owner tag of named buffers: they outlive their creator, so no client's tag fits. Client ids start at 1. */
export const NAMED_OWNER = 0;
/** Owner tag of blocks restored from the journal that nobody has reclaimed yet: no client id reaches it. */
export const ORPHAN_OWNER = MAX_OWNER;

/** With a journal: how long a change that only releases blocks may wait for its journal write (ms). */
const RELEASE_WRITE_MS = 20;
/** Holders of one named buffer listed in a `list` reply (the rest are counted in `holderCount`). */
const MAX_LISTED_HOLDERS = 32;

/** One connected client, as the transport hands it to the policy. */
export interface Peer {
  /** Client id: fresh per connection, never reused. */
  readonly id: number;
  /** SO_PEERCRED of the connection. */
  readonly cred: PeerCredentials;
  /** True once disconnected: nothing more is sent. */
  readonly gone: boolean;
  /** Addresses of the blocks it holds (an index of the block table). */
  readonly held: Set<number>;
  /** Its waiting allocations by request id. */
  readonly waits: Map<number, WaitNode<Waiter>>;
  /** Queue a JSON reply. */
  send(reply: Reply): void;
  /** Queue a binary reply frame (BLOCK, DONE). */
  sendFrame(frame: Buffer): void;
}

/** A waiting allocation. */
export interface Waiter {
  /** Who asked. */
  readonly peer: Peer;
  /** What it asked for. */
  readonly req: AllocRequest;
  /** Its `timeoutMs` timer, if any. */
  timer: NodeJS.Timeout | undefined;
}

/** A block's state: held by clients, waiting out its quarantine, or restored and not yet reclaimed. */
export type BlockState = 'held' | 'quarantined' | 'orphan';

/** The one record of a live block. */
interface BlockRecord {
  readonly addr: number;
  /** Bytes asked for. */
  readonly size: number;
  readonly token: string;
  readonly name: string | undefined;
  state: BlockState;
  /** Unnamed and held: the holder's client id; quarantined: the client that left it; 0 otherwise. */
  client: number;
  /** Named and held: every holder's client id (the last to let go frees it). */
  readonly holders: Set<number> | undefined;
  /** Pid of its last holder (journal and display). */
  pid: number;
  /** Restored from a journal in which it was quarantined: nobody may reclaim it. */
  readonly wasQuarantined: boolean;
  /** In the journal on disk (always true without a journal). */
  committed: boolean;
}

/** Options of {@link ServicePolicy}. */
export interface PolicyOptions {
  /** How long a disconnected client's blocks stay allocated, ms. */
  quarantineMs: number;
  /** Most waiting allocations per client (EAGAIN past it). */
  maxWaits: number;
  /** One line per event. */
  log: (line: string) => void;
  /** Path of journal.json, with a state directory. */
  journal?: string;
  /** The journal read at start. */
  restored?: JournalData;
  /** How long restored blocks wait to be reclaimed, ms. */
  graceMs: number;
}

/** Pool usage as the daemon reports it. */
export type PolicyStats = WireStats;

function errorReply(id: number, e: unknown): Reply {
  if (e instanceof PhysmemError) return { id, ok: false, code: e.code, message: e.message };
  return { id, ok: false, code: 'EIO', message: `EIO: internal error: ${(e as Error)?.message ?? String(e)}` };
}

function nameTaken(name: string): PhysmemError {
  return new PhysmemError('EEXIST', `a buffer named '${name}' already exists`, { hint: 'attach it with lookup(name), or choose another name' });
}

const holds = (r: BlockRecord, id: number): boolean => r.state === 'held' && (r.holders === undefined ? r.client === id : r.holders.has(id));

/** The daemon's policy over one pool; see the module comment. */
export class ServicePolicy {
  readonly #memory: ServiceMemory;
  readonly #alloc: RangeAllocator;
  readonly #page: number;
  readonly #largestRange: number;
  readonly #o: PolicyOptions;
  /** The block table: address -> record. */
  readonly #blocks = new Map<number, BlockRecord>();
  // Indexes of the table.
  readonly #names = new Map<string, BlockRecord>(); // named buffers, held or restored
  readonly #orphans = new Map<string, BlockRecord>(); // restored blocks by token
  readonly #peers = new Map<number, Peer>();
  // Counters kept with the states, so stats() does not walk the table.
  #quarantinedBlocks = 0;
  #quarantinedBytes = 0;
  readonly #waiters = new WaitQueue<Waiter>();
  readonly #timers = new Set<NodeJS.Timeout>(); // quarantine timers
  #graceTimer: NodeJS.Timeout | undefined;
  // Group commit (with a journal): blocks granted in one turn of the event loop go into one
  // journal write, and their replies leave only once it is on disk.
  #granted: { peer: Peer; req: AllocRequest; rec: BlockRecord }[] = [];
  #commitScheduled = false;
  // Lookups of a named buffer whose grant is not yet in the journal: answered after the commit.
  #lookups: { peer: Peer; id: number; rec: BlockRecord }[] = [];
  // Changes that only release blocks are written with the next commit, or after RELEASE_WRITE_MS.
  #releaseTimer: NodeJS.Timeout | undefined;
  #closed = false;

  /** @throws {PhysmemError} EIO when the restored journal does not match the memory. */
  constructor(memory: ServiceMemory, o: PolicyOptions) {
    this.#memory = memory;
    this.#o = o;
    this.#page = native().pageSize();
    this.#alloc = new RangeAllocator(memory.ranges.map((r) => ({ start: r.start, size: r.size })));
    this.#largestRange = Math.max(...memory.ranges.map((r) => r.size));
    if (o.restored !== undefined && o.journal !== undefined) this.#restore(o.journal, o.restored);
  }

  /** Start the grace period of restored blocks (once the start can no longer fail). */
  start(): void {
    if (this.#orphans.size === 0 || this.#graceTimer !== undefined) return;
    this.#o.log(`event=restore blocks=${this.#orphans.size} graceMs=${this.#o.graceMs}`);
    this.#graceTimer = setTimeout(() => this.#releaseOrphans(), this.#o.graceMs);
  }

  /** True with a journal (the fake memory file then outlives the daemon). */
  get journaled(): boolean {
    return this.#o.journal !== undefined;
  }

  /** Wait-queue entries looked at so far (tests: serving a request must not walk the queue). */
  get queueVisits(): number {
    return this.#waiters.visited;
  }

  /** A peer connected. */
  connect(peer: Peer): void {
    this.#peers.set(peer.id, peer);
  }

  /**
   * Handle one decoded request from `peer`. Validation happens before any state change.
   * @throws {PhysmemError} the error to reply with; the state is then unchanged.
   */
  handle(peer: Peer, req: Request): void {
    switch (req.op) {
      case 'hello':
        peer.send({
          id: req.id,
          ok: true,
          version: PROTOCOL_VERSION,
          client: peer.id,
          pid: peer.cred.pid,
          uid: peer.cred.uid,
          daemonPid: process.pid,
          backend: this.#memory.name,
          devicePath: this.#memory.devicePath,
          busOffset: this.#memory.busOffset.toString(),
          pageSize: this.#page,
        });
        return;
      case 'alloc':
        return this.#allocRequest(peer, req);
      case 'lookup':
        return this.#lookup(peer, req.id, req.name);
      case 'reclaim':
        return this.#reclaim(peer, req.id, req.tokens);
      case 'free':
        return this.#free(peer, req.id, req.phys, req.binary === true);
      case 'cancel': {
        const node = peer.waits.get(req.target);
        if (node !== undefined) this.#dropWaiter(node, new PhysmemError('ECANCELED', 'waiting allocation was cancelled', { hint: 'the client cancelled it' }));
        peer.send({ id: req.id, ok: true, cancelled: node !== undefined });
        return;
      }
      case 'stats':
        peer.send({ id: req.id, ok: true, ...this.stats() });
        return;
      case 'list':
        return this.#list(peer, req.id);
      case 'check':
        this.check();
        peer.send({ id: req.id, ok: true });
        return;
    }
  }

  #list(peer: Peer, id: number): void {
    const all = peer.cred.uid === 0 || peer.cred.uid === (process.getuid?.() ?? 0);
    const blocks = this.blocks().filter((b) => all || (!b.quarantined && (b.client === peer.id || (b.holders?.includes(peer.id) ?? false))));
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
    peer.send({ id, ok: true, blocks: out, truncated: out.length < blocks.length });
  }

  // ---- allocation and waiting ----

  #rounded(size: number): number {
    return Math.ceil(size / this.#page) * this.#page;
  }

  #noMemory(size: number): PhysmemError {
    const s = this.#alloc.stats();
    return new PhysmemError('ENOMEM', `cannot allocate ${size} bytes: largest free block is ${s.largestFree} bytes, ${s.free} of ${s.total} bytes free`, {
      hint: 'free buffers, wait with allocAsync(size, { wait: true }), or give the daemon more memory',
    });
  }

  // Round up to whole pages at page alignment: a client maps its block
  // itself, and mmap works in pages, so a block must never share a page.
  #tryAlloc(peer: Peer, req: AllocRequest): number {
    const align = Math.max(req.align ?? this.#page, this.#page);
    if (align > this.#largestRange) throw invalidArgument(`align ${align} is larger than the pool`);
    return this.#alloc.alloc(this.#rounded(req.size), { align, owner: req.name === undefined ? peer.id : NAMED_OWNER });
  }

  #allocRequest(peer: Peer, req: AllocRequest): void {
    if (req.size > this.#largestRange) throw this.#noMemory(req.size);
    if (req.name !== undefined && this.#names.has(req.name)) throw nameTaken(req.name);
    // First come, first served: nobody overtakes an allocation already waiting.
    if (this.#waiters.length === 0 || !req.wait) {
      const addr = this.#tryAlloc(peer, req);
      if (addr >= 0) return this.#grant(peer, req, addr);
      if (!req.wait) throw this.#noMemory(req.size);
    }
    if (peer.waits.has(req.id)) throw invalidArgument(`request id ${req.id} is already waiting`);
    // Each client's share of the queue is capped: one client cannot fill the daemon's memory with waits.
    if (peer.waits.size >= this.#o.maxWaits) {
      throw new PhysmemError('EAGAIN', `this client already has ${peer.waits.size} allocations waiting (the most one client may queue)`, {
        hint: 'wait for some of them to be served before queueing more, or start the daemon with a larger --max-waits',
      });
    }
    const w: Waiter = { peer, req, timer: undefined };
    const node = this.#waiters.push(w);
    peer.waits.set(req.id, node);
    if (req.timeoutMs !== undefined) {
      w.timer = setTimeout(() => {
        this.#dropWaiter(node, new PhysmemError('ETIMEDOUT', `no ${req.size} bytes became free within ${req.timeoutMs} ms`, {
          hint: 'free buffers sooner, raise timeoutMs, or give the daemon more memory',
        }));
      }, req.timeoutMs);
    }
  }

  // Take a waiter out of the queue and its peer's map (O(1)); false when it was no longer queued.
  #unqueue(node: WaitNode<Waiter>): boolean {
    const w = node.value;
    if (w.timer) clearTimeout(w.timer);
    w.peer.waits.delete(w.req.id);
    return this.#waiters.remove(node);
  }

  #dropWaiter(node: WaitNode<Waiter>, e: PhysmemError): void {
    if (!this.#unqueue(node)) return;
    node.value.peer.send(errorReply(node.value.req.id, e));
    this.#serveWaiters(); // the head may have been holding back smaller requests
  }

  #serveWaiters(): void {
    if (this.#waiters.length !== 0) this.#waiters.serve(this.#serveOne);
  }

  // The head of the queue: true when answered (granted or failed), false when it must go on waiting.
  readonly #serveOne = (w: Waiter): boolean => {
    let addr: number;
    try {
      addr = this.#tryAlloc(w.peer, w.req);
    } catch (e) {
      this.#unqueue(w.peer.waits.get(w.req.id)!);
      w.peer.send(errorReply(w.req.id, e));
      return true;
    }
    if (addr < 0) return false; // strict FIFO: the head waits, and so does everyone behind it
    this.#unqueue(w.peer.waits.get(w.req.id)!);
    this.#grant(w.peer, w.req, addr);
    return true;
  };

  #grant(peer: Peer, req: AllocRequest, addr: number): void {
    const name = req.name;
    if (name !== undefined && this.#names.has(name)) {
      // Taken while this request waited.
      this.#alloc.free(addr);
      peer.send(errorReply(req.id, nameTaken(name)));
      return;
    }
    this.#memory.zero(addr, this.#rounded(req.size));
    const rec: BlockRecord = {
      addr,
      size: req.size,
      token: newToken(),
      name,
      state: 'held',
      client: name === undefined ? peer.id : 0,
      holders: name === undefined ? undefined : new Set([peer.id]),
      pid: peer.cred.pid,
      wasQuarantined: false,
      committed: this.#o.journal === undefined,
    };
    this.#blocks.set(addr, rec);
    if (name !== undefined) this.#names.set(name, rec);
    peer.held.add(addr);
    if (rec.committed) {
      this.#reply(peer, req, rec);
      return;
    }
    this.#granted.push({ peer, req, rec });
    if (!this.#commitScheduled) {
      this.#commitScheduled = true;
      process.nextTick(() => this.#commit());
    }
  }

  #blockInfo(rec: BlockRecord): BlockInfo {
    const b: BlockInfo = {
      phys: String(rec.addr),
      bus: (BigInt(rec.addr) + this.#memory.busOffset).toString(),
      size: rec.size,
      offset: this.#memory.fileOffset(rec.addr).toString(),
      token: rec.token,
    };
    if (rec.name !== undefined) b.name = rec.name;
    return b;
  }

  #blockReply(id: number, rec: BlockRecord): BlockReply {
    return { id, ok: true, ...this.#blockInfo(rec) };
  }

  #reply(peer: Peer, req: AllocRequest, rec: BlockRecord): void {
    if (peer.gone) return; // its blocks are in quarantine, journaled as such
    if (this.#blocks.get(rec.addr) !== rec || !holds(rec, peer.id)) {
      // Freed (by a client guessing its address) before the journal had it.
      peer.send(errorReply(req.id, new PhysmemError('EAGAIN', 'the block was freed before it was granted', { hint: 'allocate again' })));
      return;
    }
    if (!req.binary) peer.send(this.#blockReply(req.id, rec));
    else peer.sendFrame(encodeBlock(req.id, rec.addr, BigInt(rec.addr) + this.#memory.busOffset, this.#memory.fileOffset(rec.addr), rec.size, rec.token, rec.name));
  }

  // ---- named buffers, frees, disconnects ----

  #lookup(peer: Peer, id: number, name: string): void {
    const rec = this.#names.get(name);
    if (rec === undefined || rec.state !== 'held') throw new PhysmemError('ENOENT', `no buffer named '${name}'`, { hint: 'create it with allocAsync(size, { name })' });
    if (holds(rec, peer.id)) throw new PhysmemError('EEXIST', `this client already holds '${name}'`, { hint: 'use the buffer you have' });
    rec.holders!.add(peer.id);
    peer.held.add(rec.addr);
    // Created this turn and not yet in the journal: answer once it is.
    if (!rec.committed) this.#lookups.push({ peer, id, rec });
    else peer.send(this.#blockReply(id, rec));
  }

  #free(peer: Peer, id: number, phys: bigint, binary: boolean): void {
    const addr = phys <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(phys) : -1;
    const rec = this.#blocks.get(addr);
    if (rec === undefined || !holds(rec, peer.id)) {
      if (rec !== undefined) {
        this.#o.log(`event=free-refused client=${peer.id} pid=${peer.cred.pid} phys=${hex(addr)}`);
        throw new PhysmemError('EPERM', `the block at physical ${hex(addr)} belongs to another client`, { hint: 'free only blocks this connection allocated' });
      }
      throw new PhysmemError('EINVAL', `no block of this client starts at physical ${hex(phys)}`, { hint: 'pass the exact phys of a live buffer (double free?)' });
    }
    peer.held.delete(addr);
    if (this.#letGo(rec, peer.id)) this.#release(rec);
    if (binary) peer.sendFrame(encodeDone(id));
    else peer.send({ id, ok: true });
    this.#serveWaiters();
  }

  // Drop `id`'s hold; true when nobody holds the block any more.
  #letGo(rec: BlockRecord, id: number): boolean {
    if (rec.holders === undefined) return true;
    rec.holders.delete(id);
    return rec.holders.size === 0;
  }

  // The block leaves the table and returns to the allocator.
  #release(rec: BlockRecord): number {
    this.#blocks.delete(rec.addr);
    if (rec.name !== undefined && this.#names.get(rec.name) === rec) this.#names.delete(rec.name);
    if (rec.state === 'orphan') this.#orphans.delete(rec.token);
    if (rec.state === 'quarantined') {
      this.#quarantinedBlocks--;
      this.#quarantinedBytes -= rec.size;
    }
    this.#persistSoon();
    return this.#alloc.free(rec.addr);
  }

  /** A peer disconnected: its waits are dropped, the blocks only it held go to quarantine. */
  disconnect(peer: Peer): void {
    if (!this.#peers.delete(peer.id)) return;
    for (const node of [...peer.waits.values()]) this.#unqueue(node);
    // Named buffers others still hold stay; the rest (own blocks, named ones this client held last) go to quarantine.
    const list: BlockRecord[] = [];
    for (const addr of peer.held) {
      const rec = this.#blocks.get(addr)!;
      if (!this.#letGo(rec, peer.id)) continue;
      rec.state = 'quarantined';
      rec.client = peer.id;
      rec.pid = peer.cred.pid;
      // The name disappears at once; the tag follows the record (a named block was NAMED_OWNER's).
      if (rec.name !== undefined) {
        this.#names.delete(rec.name);
        this.#alloc.setOwner(addr, peer.id);
      }
      this.#quarantinedBlocks++;
      this.#quarantinedBytes += rec.size;
      list.push(rec);
    }
    peer.held.clear();
    this.#o.log(`event=disconnect client=${peer.id} pid=${peer.cred.pid} blocks=${list.length}`);
    // Its waits are gone: one of them may have been the head holding back requests that fit now.
    this.#serveWaiters();
    if (list.length === 0) return;
    // The blocks stay allocated until the timer fires: a device may still be writing into them.
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      let freed = 0;
      let n = 0;
      for (const rec of list) {
        if (this.#blocks.get(rec.addr) !== rec) continue; // taken back by a failed journal write
        freed += this.#release(rec);
        n++;
      }
      this.#o.log(`event=reclaim client=${peer.id} pid=${peer.cred.pid} blocks=${n} bytes=${freed}`);
      this.#serveWaiters();
    }, this.#o.quarantineMs);
    this.#timers.add(timer);
    this.#persistSoon(); // now marked quarantined: not reclaimable after a restart
  }

  // ---- restart: restored blocks ----

  // Put every journaled block back into the allocator, owned by nobody, until reclaimed or the grace period ends.
  #restore(path: string, j: JournalData): void {
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
        throw new PhysmemError('EIO', `the journal's block at ${hex(addr)} (${b.size} bytes) lies outside the pool or overlaps another`, {
          path,
          hint: 'the journal does not match this memory: restart with the same options as before, or move the journal away (its blocks are then lost)',
        });
      }
      const rec: BlockRecord = {
        addr,
        size: b.size,
        token: b.token,
        name: b.name,
        state: 'orphan',
        client: 0,
        holders: b.name === undefined ? undefined : new Set(),
        pid: b.pid,
        wasQuarantined: b.quarantined === true,
        committed: true,
      };
      this.#blocks.set(addr, rec);
      this.#orphans.set(b.token, rec);
      if (b.name !== undefined) this.#names.set(b.name, rec);
    }
  }

  #releaseOrphans(): void {
    this.#graceTimer = undefined;
    let bytes = 0;
    const n = this.#orphans.size;
    // The memory is zeroed when handed out again (#grant), like any freed block.
    for (const rec of [...this.#orphans.values()]) bytes += this.#release(rec);
    this.#o.log(`event=release-orphans blocks=${n} bytes=${bytes}`);
    this.#serveWaiters();
  }

  #reclaim(peer: Peer, id: number, tokens: string[]): void {
    // All or none, checked before any change.
    for (const [i, t] of tokens.entries()) {
      const rec = this.#orphans.get(t);
      if (rec === undefined || rec.wasQuarantined) {
        throw new PhysmemError('ENOENT', `no restored block waits for token ${i + 1} of ${tokens.length}`, {
          hint: 'a token is valid once, after a daemon restart, within its grace period (--grace-ms)',
        });
      }
    }
    const blocks: BlockInfo[] = [];
    for (const t of tokens) {
      const rec = this.#orphans.get(t)!;
      this.#orphans.delete(t);
      rec.state = 'held';
      rec.pid = peer.cred.pid;
      if (rec.holders !== undefined) rec.holders.add(peer.id);
      else rec.client = peer.id;
      // Re-own it in place: the block is neither freed nor moved.
      this.#alloc.setOwner(rec.addr, rec.name === undefined ? peer.id : NAMED_OWNER);
      peer.held.add(rec.addr);
      blocks.push(this.#blockInfo(rec));
    }
    if (this.#orphans.size === 0 && this.#graceTimer) {
      clearTimeout(this.#graceTimer);
      this.#graceTimer = undefined;
    }
    this.#persistSoon();
    this.#o.log(`event=reclaim-tokens client=${peer.id} pid=${peer.cred.pid} blocks=${tokens.length}`);
    peer.send({ id, ok: true, blocks });
  }

  // ---- the journal ----

  #pidOf(rec: BlockRecord): number {
    if (rec.state !== 'held') return rec.pid;
    const first = rec.holders === undefined ? rec.client : rec.holders.values().next().value;
    return (first === undefined ? undefined : this.#peers.get(first)?.cred.pid) ?? rec.pid;
  }

  // The table as the journal keeps it: every block still allocated, whoever holds it.
  #table(): JournalData {
    const blocks: JournalBlock[] = [];
    for (const rec of this.#blocks.values()) {
      const b: JournalBlock = { phys: String(rec.addr), size: rec.size, token: rec.token, pid: this.#pidOf(rec) };
      if (rec.name !== undefined && rec.state !== 'quarantined') b.name = rec.name;
      if (rec.state === 'quarantined' || rec.wasQuarantined) b.quarantined = true;
      blocks.push(b);
    }
    return { version: 1, backend: this.#memory.name, total: this.#alloc.stats().total, blocks };
  }

  // Write the journal; throws. Used where a block is handed out: the reply must not go before the journal has it.
  #persist(): void {
    if (this.#o.journal !== undefined) writeJournal(this.#o.journal, this.#table());
  }

  // Journal a change that only released blocks, soon rather than now: a journal that still lists
  // a released block is safe (a restart holds it for the grace period, then releases it), so this
  // write can wait for the next commit; one fsync'd snapshot per allocation and per free would cap
  // the daemon at a few hundred pairs/s. A failure is logged and the daemon goes on.
  #persistSoon(): void {
    if (this.#o.journal === undefined || this.#commitScheduled || this.#releaseTimer !== undefined) return;
    this.#releaseTimer = setTimeout(() => {
      this.#releaseTimer = undefined;
      if (!this.#closed) this.#writeOrLog();
    }, RELEASE_WRITE_MS);
  }

  #writeOrLog(): void {
    try {
      this.#persist();
    } catch (e) {
      this.#o.log(`event=journal-error message=${JSON.stringify(String((e as Error)?.message ?? e))}`);
    }
  }

  // Write the journal once for every block granted this turn, then send their replies;
  // if the write fails, take them back and tell each client (EIO).
  #commit(): void {
    this.#commitScheduled = false;
    if (this.#closed) return; // close() wrote the journal; the table is gone now
    if (this.#releaseTimer !== undefined) {
      clearTimeout(this.#releaseTimer);
      this.#releaseTimer = undefined;
    }
    const batch = this.#granted;
    const lookups = this.#lookups;
    this.#granted = [];
    this.#lookups = [];
    try {
      this.#persist();
    } catch (e) {
      const err = new PhysmemError('EIO', `cannot write the journal: ${(e as Error)?.message ?? String(e)}`, { hint: 'check the --state-dir file system (full? read-only?)' });
      this.#o.log(`event=journal-error message=${JSON.stringify(err.message)}`);
      // Not in the journal: a restart would hand them out again, so their clients must not get them.
      for (const g of batch) {
        if (this.#blocks.get(g.rec.addr) === g.rec) this.#ungrant(g.rec);
        g.peer.send(errorReply(g.req.id, err));
      }
      for (const l of lookups) l.peer.send(errorReply(l.id, err));
      this.#serveWaiters();
      return;
    }
    for (const g of batch) g.rec.committed = true;
    for (const g of batch) this.#reply(g.peer, g.req, g.rec);
    for (const l of lookups) {
      // Still held (nobody freed it meanwhile)?
      if (this.#blocks.get(l.rec.addr) === l.rec && holds(l.rec, l.peer.id)) l.peer.send(this.#blockReply(l.id, l.rec));
      else l.peer.send(errorReply(l.id, new PhysmemError('ENOENT', `the buffer '${l.rec.name}' was freed before it could be attached`, { hint: 'look it up again' })));
    }
  }

  // Undo a grant whose journal write failed: nobody got a reply for it (lookups of it wait for
  // the commit too), so the block returns to the pool at once, named or not, held or quarantined.
  #ungrant(rec: BlockRecord): void {
    if (rec.holders !== undefined) for (const h of rec.holders) this.#peers.get(h)?.held.delete(rec.addr);
    else this.#peers.get(rec.client)?.held.delete(rec.addr);
    this.#blocks.delete(rec.addr);
    if (rec.name !== undefined && this.#names.get(rec.name) === rec) this.#names.delete(rec.name);
    if (rec.state === 'quarantined') {
      this.#quarantinedBlocks--;
      this.#quarantinedBytes -= rec.size;
    }
    this.#alloc.free(rec.addr);
  }

  // ---- reports ----

  /** Pool usage, clients and quarantine. */
  stats(): PolicyStats {
    const { total, used, free, largestFree, count } = this.#alloc.stats();
    return {
      backend: this.#memory.name,
      ...{ total, used, free, largestFree, count },
      waiting: this.#waiters.length,
      busOffset: this.#memory.busOffset.toString(),
      clients: this.#peers.size,
      quarantinedBlocks: this.#quarantinedBlocks,
      quarantinedBytes: this.#quarantinedBytes,
      orphanBlocks: this.#orphans.size,
      ranges: this.#memory.ranges.map((r) => ({ start: String(r.start), size: r.size })),
    };
  }

  /** Every live block, in address order. */
  blocks(): ServiceBlock[] {
    const recs = [...this.#blocks.values()].sort((x, y) => x.addr - y.addr);
    return recs.map((rec) => {
      const b: ServiceBlock = { phys: String(rec.addr), size: rec.size, client: 0, pid: this.#pidOf(rec), quarantined: rec.state !== 'held' };
      if (rec.state === 'held') {
        if (rec.holders === undefined) b.client = rec.client;
        else {
          b.holders = [...rec.holders];
          b.client = b.holders[0];
        }
      } else if (rec.state === 'quarantined') b.client = rec.client;
      else b.orphan = true;
      if (rec.name !== undefined && rec.state !== 'quarantined') b.name = rec.name;
      return b;
    });
  }

  /**
   * Verify the allocator's invariants and that the block table, its indexes and the
   * allocator's owner tags agree. @throws {PhysmemError} EIO on corruption.
   */
  check(): void {
    this.#alloc.check();
    const bad = (what: string) => new PhysmemError('EIO', what);
    let quarantined = 0;
    let orphans = 0;
    for (const [addr, rec] of this.#blocks) {
      const at = hex(addr);
      let tag: number;
      if (rec.state === 'held') {
        tag = rec.holders === undefined ? rec.client : NAMED_OWNER;
        const ids = rec.holders === undefined ? [rec.client] : [...rec.holders];
        if (ids.length === 0) throw bad(`block ${at} is held by nobody`);
        for (const id of ids) if (!this.#peers.get(id)?.held.has(addr)) throw bad(`client ${id} holds ${at} but does not list it`);
        if (rec.name !== undefined && this.#names.get(rec.name) !== rec) throw bad(`named buffer '${rec.name}' is not indexed`);
      } else if (rec.state === 'quarantined') {
        tag = rec.client;
        quarantined++;
      } else {
        tag = ORPHAN_OWNER;
        orphans++;
        if (this.#orphans.get(rec.token) !== rec) throw bad(`restored block ${at} is not indexed by its token`);
      }
      if (this.#alloc.ownerOf(addr) !== tag) throw bad(`block ${at} (${rec.state}) has owner tag ${this.#alloc.ownerOf(addr)}, expected ${tag}`);
    }
    for (const peer of this.#peers.values()) {
      for (const addr of peer.held) {
        const rec = this.#blocks.get(addr);
        if (rec === undefined || !holds(rec, peer.id)) throw bad(`client ${peer.id} lists ${hex(addr)} but does not hold it`);
      }
    }
    if (quarantined !== this.#quarantinedBlocks) throw bad(`${quarantined} blocks are quarantined but the count says ${this.#quarantinedBlocks}`);
    if (orphans !== this.#orphans.size) throw bad(`${orphans} blocks are restored but ${this.#orphans.size} are indexed`);
    const count = this.#alloc.stats().count;
    if (this.#blocks.size !== count) throw bad(`the block table has ${this.#blocks.size} blocks but the allocator has ${count}`);
  }

  /**
   * Stop: write what is pending (the blocks survive a restart), drop waits and timers,
   * free everything, close the memory. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    if (this.#commitScheduled || this.#releaseTimer !== undefined) {
      // Write what is pending while the table is still whole.
      if (this.#releaseTimer !== undefined) clearTimeout(this.#releaseTimer);
      this.#releaseTimer = undefined;
      this.#writeOrLog();
    }
    this.#closed = true;
    for (const w of this.#waiters.drain()) if (w.timer) clearTimeout(w.timer);
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    if (this.#graceTimer) clearTimeout(this.#graceTimer);
    this.#alloc.freeAll();
    this.#blocks.clear();
    this.#memory.close();
  }
}
