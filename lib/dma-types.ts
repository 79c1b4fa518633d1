/**
 * Types shared by pool.ts and subpool.ts without one importing the other.
 * @module
 */

/**
 * Which way the data of a sync goes, as Linux's enum dma_data_direction:
 * `'toDevice'` (the CPU wrote, the device reads), `'fromDevice'` (the device
 * wrote, the CPU reads), or `'bidirectional'` (either; always correct).
 */
export type SyncDirection = 'bidirectional' | 'toDevice' | 'fromDevice';
