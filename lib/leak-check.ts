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
 * first. Buffers freed by then are skipped and never touch the registry. A
 * buffer dropped without `free()` is still in the batch or registered, so it
 * is always reported; the report comes at most one batch later.
 *
 * The registry only ever reports: it never frees the memory (a device may
 * still be using it).
 * @module
 */

/** Buffers held before registering them synchronously (bounds the memory a long synchronous loop keeps alive). */
export const LEAK_BATCH = 1024;

/** What the leak check needs of a DmaBuffer. */
export interface Watched {
  /** True once freed (its bytes are detached). */
  readonly freed: boolean;
}

/** @internal One per pool with leakCheck 'warn' or 'trace'. View ids are the backend's (small integers, reused). */
export class LeakWatch {
  readonly #registry: FinalizationRegistry<number>; // held value: the block's address
  readonly #tokens: object[] = []; // per view id, reused: a fresh token per buffer would cost a hash each time
  readonly #registered: number[] = []; // per view id: 1 while its buffer is registered
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
    const i = this.#count++;
    this.#bufs[i] = buf;
    this.#addrs[i] = addr;
    this.#views[i] = view;
    if (this.#count === LEAK_BATCH) this.#flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      // unref: a pending batch must not keep the process alive.
      setImmediate(this.#onImmediate).unref?.();
    }
  }

  /** The buffer over view `view` is being freed: drop its registration, if it has one. */
  forget(view: number): void {
    if (this.#registered[view] === 1) {
      this.#registered[view] = 0;
      this.#registry.unregister(this.#tokens[view]);
    }
  }

  /** The pool closed: no more reports; drop everything held. */
  close(): void {
    this.#closed = true;
    for (let view = 0; view < this.#registered.length; view++) this.forget(view);
    this.#bufs.fill(undefined, 0, this.#count);
    this.#count = 0;
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
      const buf = this.#bufs[i]!;
      this.#bufs[i] = undefined;
      if (buf.freed) continue; // the common case: freed before the batch was registered
      const view = this.#views[i];
      const token = this.#tokens[view] ?? (this.#tokens[view] = {});
      this.#registry.register(buf, this.#addrs[i], token);
      this.#registered[view] = 1;
    }
  }
}
