/**
 * Standalone-mode round trips: alloc+free pairs per second against a daemon,
 * with 1 and with 4 client processes, and the p50/p99 latency of one pair.
 * Targets (issue 5): >= 30,000/s with one client, >= 60,000/s with four, p99 < 300 us.
 *
 * Run after `npm run build:ts`: `node dist/bench/service.js [seconds]`.
 * The daemon runs in this process; each client is a child process (fork of this file).
 * @module
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../lib/service/server.js';
import { ServicePool } from '../lib/service/client.js';

/** What one client process reports. */
interface ClientResult {
  /** alloc+free pairs completed. */
  pairs: number;
  /** Latency of each pair in microseconds (a sample of at most 100,000). */
  latenciesUs: number[];
  /** Measured time in ms. */
  ms: number;
}

async function clientMain(socket: string, seconds: number): Promise<void> {
  const pool = await ServicePool.connect(socket);
  // Warm up the JIT on both sides before measuring.
  for (let i = 0; i < 2000; i++) await (await pool.allocAsync(4096)).free();
  const lat: number[] = [];
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let pairs = 0;
  for (let now = t0; now < end; ) {
    const b = await pool.allocAsync(4096);
    await b.free();
    const t = performance.now();
    if (lat.length < 100_000) lat.push((t - now) * 1000);
    now = t;
    pairs++;
  }
  const result: ClientResult = { pairs, latenciesUs: lat, ms: performance.now() - t0 };
  await pool.close();
  process.send!(result);
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function runClients(socket: string, n: number, seconds: number): Promise<{ perSecond: number; p50: number; p99: number }> {
  const self = fileURLToPath(import.meta.url);
  const results = await Promise.all(Array.from({ length: n }, () => new Promise<ClientResult>((resolve, reject) => {
    const child = fork(self, ['--client', socket, String(seconds)], { stdio: 'inherit' });
    child.once('message', (m) => resolve(m as ClientResult));
    child.once('exit', (code) => (code === 0 ? undefined : reject(new Error(`client exited with ${code}`))));
  })));
  const perSecond = results.reduce((s, r) => s + r.pairs / (r.ms / 1000), 0);
  const all = results.flatMap((r) => r.latenciesUs).sort((a, b) => a - b);
  return { perSecond, p50: percentile(all, 50), p99: percentile(all, 99) };
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[2] ?? 3);
  const dir = mkdtempSync(join(tmpdir(), 'physmem-bench-'));
  const socket = join(dir, 'run', 'pool.sock');
  const server = await startServer({ socket, size: 64 << 20, quarantineMs: 0, log: () => undefined });
  try {
    for (const [n, target] of [[1, 30_000], [4, 60_000]] as const) {
      const r = await runClients(socket, n, seconds);
      const pass = r.perSecond >= target && r.p99 < 300;
      console.log(`service alloc+free, ${n} client${n > 1 ? 's' : ''}: ${Math.round(r.perSecond)}/s (target >= ${target}), ` +
        `p50 ${r.p50.toFixed(0)} us, p99 ${r.p99.toFixed(0)} us (target < 300)  ${pass ? 'PASS' : 'MISS'}`);
    }
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--client') await clientMain(process.argv[3], Number(process.argv[4]));
else await main();
