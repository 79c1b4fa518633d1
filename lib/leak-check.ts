/**
 * The pool's leak check: learn that a DmaBuffer was garbage-collected without
 * `free()`, cheaply enough to be on by default.
 *
 * A FinalizationRegistry registration (and its unregistration at free) costs
 * about half a microsecond, as much as the rest of an alloc+free. Most
 * buffers are freed soon after they are allocated, so registration waits:
 * a new buffer goes into a batch (held strongly, so it cannot be collected
 * unseen), and the batch is registered at the next turn of the event loop
 * (setImmediate) or when it holds {@link LEAK_BATCH} buffers, whichever comes
 * first. A buffer freed by then leaves the batch at once (its slot is
 * cleared, and the newest slot is given back, so an alloc+free loop keeps
 * the batch at one entry) and never touches the registry: the batch must not
 * keep freed buffers alive, or they would outlive the young generation and
 * cost a copy each (about a quarter of an alloc+free). A buffer dropped
 * without `free()` is still in the batch or registered, so it is always
 * reported; the report comes at most one batch later.
 *
 * The registry only ever reports: it never frees the memory (a device may
 * still be using it).
 * @module
 */

/** Buffers held before registering them synchronously (bounds the memory a long synchronous loop keeps alive). */
export const LEAK_BATCH = 1024;

const REGISTERED = -1;

/** What the leak check needs of a DmaBuffer. */
export interface Watched {
  /** True once freed (its bytes are detached). */
  readonly freed: boolean;
}

/** @internal One per pool with leakCheck 'warn' or 'trace'. View ids are the backend's (small integers, reused). */
export class LeakWatch {
  readonly #registry: FinalizationRegistry<number>; // held value: the block's address
  readonly #tokens: object[] = []; // per view id, reused: a fresh token per buffer would cost a hash each time
  // Per view id: k > 0 while its buffer is in the batch at index k - 1, REGISTERED, or 0.
  #state = new Int32Array(64);
  readonly #bufs: (Watched | undefined)[] = new Array<Watched | undefined>(LEAK_BATCH).fill(undefined);
  readonly #addrs = new Float64Array(LEAK_BATCH);
  readonly #views = new Int32Array(LEAK_BATCH);
  #count = 0;
  #scheduled = false;
  #closed = false;

  /** @param report - called with the block's address when a registered buffer is collected (never after close). */
  constructor(report: (addr: number) => void) {
    this.#registry = new FinalizationRegistry((addr) => {
      if (!this.#closed) report(addr);
    });
  }

  /** A new buffer over view `view` at `addr`: registered at the next turn of the event loop unless freed by then. */
  watch(buf: Watched, addr: number, view: number): void {
    if (view >= this.#state.length) this.#grow(view);
    const i = this.#count++;
    this.#bufs[i] = buf;
    this.#addrs[i] = addr;
    this.#views[i] = view;
    this.#state[view] = i + 1;
    if (this.#count === LEAK_BATCH) this.#flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      // unref: a pending batch must not keep the process alive.
      setImmediate(this.#onImmediate).unref?.();
    }
  }

  /** The buffer over view `view` (watched) is being freed: take it out of the batch, or drop its registration. */
  forget(view: number): void {
    const s = this.#state[view];
    if (s === 0) return;
    this.#state[view] = 0;
    if (s > 0) {
      this.#bufs[s - 1] = undefined; // no longer held: it may die young
      if (s === this.#count) this.#count--; // the newest: its slot is reused
    } else {
      this.#registry.unregister(this.#tokens[view]);
    }
  }

  /** The pool closed: no more reports; drop everything held. */
  close(): void {
    this.#closed = true;
    for (let view = 0; view < this.#state.length; view++) if (this.#state[view] === REGISTERED) this.#registry.unregister(this.#tokens[view]);
    this.#state.fill(0);
    this.#bufs.fill(undefined, 0, this.#count);
    this.#count = 0;
  }

  #grow(view: number): void {
    const state = new Int32Array(Math.max(this.#state.length * 2, view + 1));
    state.set(this.#state);
    this.#state = state;
  }

  readonly #onImmediate = (): void => {
    this.#scheduled = false;
    this.#flush();
  };

  #flush(): void {
    const n = this.#count;
    this.#count = 0;
    if (this.#closed) return;
    for (let i = 0; i < n; i++) {
      const buf = this.#bufs[i];
      if (buf === undefined) continue; // freed before the batch was registered
      this.#bufs[i] = undefined;
      const view = this.#views[i];
      if (buf.freed) {
        if (this.#state[view] === i + 1) this.#state[view] = 0; // freed without forget (not the pool's path)
        continue;
      }
      const token = this.#tokens[view] ?? (this.#tokens[view] = {});
      this.#registry.register(buf, this.#addrs[i], token);
      this.#state[view] = REGISTERED;
    }
  }
}
