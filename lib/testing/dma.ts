/**
 * FakeDmaDevice: a device's DMA into a pool, checked against the pool's live
 * allocations.
 * @module
 */
import { PhysmemError, invalidArgument } from '../errors.js';
import { Pool, kDeviceAccess } from '../pool.js';
import { describeValue, hex } from '../internal/validate.js';

/** A DMA transfer that touched memory outside a live allocation. */
export interface DmaViolation {
  /** `'read'` (device read memory) or `'write'` (device wrote memory). */
  op: 'read' | 'write';
  /** Bus address of the transfer. */
  bus: bigint;
  /** Length in bytes. */
  length: number;
  /** What was wrong, e.g. "not inside a live allocation (freed?)". */
  reason: string;
}

/**
 * Stands in for a device doing DMA into a pool (use with the fake backend in
 * CI). Every transfer must lie inside one live allocation; anything else
 * (use after free, overrun, wrong address) throws EFAULT and is recorded in
 * {@link FakeDmaDevice.violations}.
 */
export class FakeDmaDevice {
  /** Every refused transfer, oldest first. */
  readonly violations: DmaViolation[] = [];
  readonly #pool: Pool;

  /** @param pool - the pool whose bus addresses this device sees. */
  constructor(pool: Pool) {
    if (!(pool instanceof Pool)) throw invalidArgument(`new FakeDmaDevice() needs a Pool (from openPoolSync()), got ${describeValue(pool)}`);
    this.#pool = pool;
  }

  /**
   * The device writes `data` at `busAddress` (device -> memory).
   * @throws {PhysmemError} EFAULT when the range is not inside one live allocation.
   */
  write(busAddress: bigint | number, data: Uint8Array): void {
    if (!(data instanceof Uint8Array)) throw invalidArgument('data must be a Uint8Array');
    const phys = this.#check('write', busAddress, data.length);
    this.#pool[kDeviceAccess](phys, data.length, (mem) => mem.set(data));
  }

  /**
   * The device reads `length` bytes at `busAddress` (memory -> device).
   * @returns a copy of the bytes.
   * @throws {PhysmemError} EFAULT when the range is not inside one live allocation.
   */
  read(busAddress: bigint | number, length: number): Uint8Array {
    const phys = this.#check('read', busAddress, length);
    return this.#pool[kDeviceAccess](phys, length, (mem) => mem.slice());
  }

  #check(op: 'read' | 'write', busAddress: bigint | number, length: number): number {
    if (typeof busAddress !== 'bigint' && typeof busAddress !== 'number') throw invalidArgument('busAddress must be a bigint or a number');
    if (!Number.isSafeInteger(length) || length <= 0) throw invalidArgument(`length must be a positive integer, got ${String(length)}`);
    const bus = BigInt(busAddress);
    const phys = this.#pool.toPhys(bus);
    const block = phys >= 0n ? this.#pool.findBlock(phys) : undefined;
    let reason: string | undefined;
    if (block === undefined) reason = 'not inside a live allocation (freed, never allocated, or a wrong address?)';
    else if (phys + BigInt(length) > block.phys + BigInt(block.size)) {
      reason = `runs past the end of the ${block.size}-byte block at bus ${hex(this.#pool.toBus(block.phys))}`;
    }
    if (reason !== undefined) {
      this.violations.push({ op, bus, length, reason });
      throw new PhysmemError('EFAULT', `DMA ${op} of ${length} bytes at bus ${hex(bus)} ${reason}`, {
        hint: 'the driver handed the device an address it does not own',
      });
    }
    return Number(phys);
  }
}
