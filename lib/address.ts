/**
 * Address arithmetic for descriptors: the bus or physical address of a byte
 * inside a buffer, as a bigint, range-checked.
 * @module
 */
import { PhysmemError, invalidArgument } from './errors.js';
import { hex } from './internal/validate.js';

/**
 * `base + offset` as a bigint, for DmaBuffer/SubPoolBlock/ServiceBuffer's
 * `busAt`/`physAt`. Off the fast path only when the offset is bad.
 * @param what - e.g. `'busAt'`, for messages.
 * @param base - the buffer's first address.
 * @param size - the buffer's size in bytes (0 once freed).
 * @param offset - an integer in [0, size).
 * @throws {PhysmemError} EINVAL (not an integer, or the buffer was freed), ERANGE (outside the buffer).
 * @internal
 */
export function addressAt(what: string, base: bigint, size: number, offset: number, freed: boolean): bigint {
  if (!freed && typeof offset === 'number' && offset % 1 === 0 && offset >= 0 && offset < size) return base + BigInt(offset);
  if (freed) {
    throw new PhysmemError('EINVAL', `${what}(${String(offset)}) on a freed buffer (was at ${hex(base)})`, {
      hint: 'its memory may belong to someone else now: take addresses of live buffers only',
    });
  }
  if (typeof offset !== 'number' || !Number.isInteger(offset)) throw invalidArgument(`${what}: offset must be an integer number of bytes, got ${String(offset)}`);
  throw new PhysmemError('ERANGE', `${what}(${offset}) is outside the buffer of ${size} bytes (offsets 0 to ${size - 1})`, {
    hint: 'an address past the end belongs to other memory; split the transfer or allocate a larger buffer',
  });
}
