/**
 * The first-come-first-served queue of waiting allocations, shared by
 * {@link Pool} (`allocAsync(size, { wait: true })`) and the daemon.
 *
 * A doubly linked list of nodes that the caller keeps: adding, removing any
 * node (a timeout, a cancel, a disconnect) and taking the head are O(1), so
 * no operation costs O(queued waiters), however many wait.
 * @module
 */

/** One waiting allocation in a {@link WaitQueue}; keep it to remove it later. */
export interface WaitNode<T> {
  /** What the caller queued. */
  readonly value: T;
  /** @internal */
  prev: WaitNode<T> | undefined;
  /** @internal */
  next: WaitNode<T> | undefined;
  /** @internal True while in the queue. */
  queued: boolean;
}

/** A FIFO of waiting allocations; see the module comment. */
export class WaitQueue<T> {
  #head: WaitNode<T> | undefined;
  #tail: WaitNode<T> | undefined;
  /** Number of nodes queued. */
  length = 0;
  /**
   * Nodes looked at so far by {@link WaitQueue.serve} and iteration: tests use it to show that
   * serving a request does not walk the queue.
   */
  visited = 0;

  /** Append `value`; returns its node. O(1). */
  push(value: T): WaitNode<T> {
    const n: WaitNode<T> = { value, prev: this.#tail, next: undefined, queued: true };
    if (this.#tail === undefined) this.#head = n;
    else this.#tail.next = n;
    this.#tail = n;
    this.length++;
    return n;
  }

  /** Take `node` out; false when it was no longer queued. O(1). */
  remove(node: WaitNode<T>): boolean {
    if (!node.queued) return false;
    node.queued = false;
    if (node.prev === undefined) this.#head = node.next;
    else node.prev.next = node.next;
    if (node.next === undefined) this.#tail = node.prev;
    else node.next.prev = node.prev;
    node.prev = node.next = undefined;
    this.length--;
    return true;
  }

  /**
   * Serve in strict FIFO order: call `attempt` with the head while there is one; when it
   * returns true the head was served (or failed and was answered) and is removed, and the
   * next one is tried; when it returns false the head must go on waiting, and so does
   * everyone behind it (a small request never overtakes the head).
   */
  serve(attempt: (value: T) => boolean): void {
    while (this.#head !== undefined) {
      const n = this.#head;
      this.visited++;
      if (!attempt(n.value)) return;
      this.remove(n); // attempt may have removed it already
    }
  }

  /** Remove every node; returns their values in order. */
  drain(): T[] {
    const out: T[] = [];
    for (let n = this.#head; n !== undefined; ) {
      const next = n.next;
      n.queued = false;
      n.prev = n.next = undefined;
      out.push(n.value);
      n = next;
    }
    this.#head = this.#tail = undefined;
    this.length = 0;
    return out;
  }

  /** The values in order (each counts as visited). */
  *[Symbol.iterator](): IterableIterator<T> {
    for (let n = this.#head; n !== undefined; n = n.next) {
      this.visited++;
      yield n.value;
    }
  }
}
