/**
 * The same-run C++ reference of the allocator benchmarks: builds
 * bench/reference/offset-allocator-design.cc (physmem's own implementation of
 * OffsetAllocator's published design, see its header) with `g++ -O2` into a
 * cache directory, once per source version, and runs one workload round per
 * call, so the JS rounds and the reference rounds interleave under the same
 * machine load.
 * @module
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** How every figure from the reference is named in the output. */
export const REFERENCE_NAME = 'OffsetAllocator-design C++ reference';

const SOURCE = fileURLToPath(new URL('../../bench/reference/offset-allocator-design.cc', import.meta.url));
const CACHE = fileURLToPath(new URL('../../node_modules/.cache/physmem-bench/', import.meta.url));

/** The built reference, or why there is none. */
export type Reference = { ok: true; binary: string } | { ok: false; reason: string };

let built: Reference | undefined;

/**
 * Build the reference once per process (reused from the cache when the
 * source and compiler are unchanged).
 * @returns the binary's path, or the reason it cannot be built (no g++, a
 *   compile error), for the caller to print.
 */
export function reference(): Reference {
  if (built) return built;
  let version: string;
  try {
    version = execFileSync('g++', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0];
  } catch {
    return (built = { ok: false, reason: 'no g++ on PATH' });
  }
  const source = readFileSync(SOURCE);
  const key = createHash('sha256').update(source).update(version).digest('hex').slice(0, 16);
  const binary = join(CACHE, `offset-allocator-design-${key}`);
  if (!existsSync(binary)) {
    try {
      mkdirSync(CACHE, { recursive: true });
      const tmp = `${binary}.${process.pid}`;
      execFileSync('g++', ['-O2', '-std=c++17', '-o', tmp, SOURCE], { stdio: ['ignore', 'ignore', 'pipe'] });
      renameSync(tmp, binary);
    } catch (e) {
      return (built = { ok: false, reason: `g++ failed: ${(e as Error).message.split('\n')[0]}` });
    }
  }
  return (built = { ok: true, binary });
}

/**
 * Write a Float64Array of sizes (bytes) to the cache for the reference to
 * read (named by its content, so reruns reuse it); returns its path.
 */
export function sizesFile(sizes: Float64Array): string {
  const bytes = new Uint8Array(sizes.buffer, sizes.byteOffset, sizes.byteLength);
  const path = join(CACHE, `sizes-${createHash('sha256').update(bytes).digest('hex').slice(0, 16)}.f64`);
  if (!existsSync(path)) {
    mkdirSync(CACHE, { recursive: true });
    writeFileSync(`${path}.${process.pid}`, bytes);
    renameSync(`${path}.${process.pid}`, path);
  }
  return path;
}

/** Run one round of a workload in the reference; returns the numbers it printed. */
export function runReference(binary: string, args: (string | number)[]): number[] {
  const out = execFileSync(binary, args.map(String), { encoding: 'utf8' });
  return out.trim().split(/\s+/).map(Number);
}

/** Median of a list of numbers (the list is sorted in place). */
export function median(xs: number[]): number {
  xs.sort((a, b) => a - b);
  return xs[xs.length >> 1];
}
