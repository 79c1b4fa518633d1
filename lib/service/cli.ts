/**
 * `physmem serve`: run the daemon until SIGTERM or SIGINT.
 * @module
 */
import { startServer, type ServeOptions } from './server.js';

/** Options of `physmem serve`, as parsed from the command line. */
export interface ServeCommandOptions {
  /** Socket path. */
  socket: string;
  /** `'fake'` or `'devmem'`. */
  backend: 'fake' | 'devmem';
  /** Fake memory size in bytes. */
  size?: number;
  /** Journal directory: blocks survive a daemon restart. */
  stateDir?: string;
  /** With `stateDir`: how long restored blocks wait to be reclaimed, ms. */
  graceMs?: number;
  /** Quarantine of a disconnected client's blocks, ms. */
  quarantineMs?: number;
  /** Group allowed to connect. */
  group?: string;
  /** Log one JSON object per event (see {@link logLineToJson}) instead of key=value lines. */
  json?: boolean;
  /** Most allocations one client may have waiting at once. */
  maxWaits?: number;
}

/**
 * A daemon log line (`<ISO time> physmem[<pid>] event=<name> key=value ...`,
 * values either bare or JSON-quoted) as one JSON object:
 * `{"time","pid","event",...}`; numbers become numbers, addresses stay hex strings.
 */
export function logLineToJson(line: string): string {
  const m = /^(\S+) physmem\[(\d+)\] (.*)$/.exec(line);
  if (!m) return JSON.stringify({ message: line });
  const out: Record<string, unknown> = { time: m[1], pid: Number(m[2]) };
  for (const kv of m[3].matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S+)/g)) {
    const v = kv[2];
    out[kv[1]] = v.startsWith('"') ? JSON.parse(v) : /^-?\d+$/.test(v) && Number.isSafeInteger(Number(v)) ? Number(v) : v;
  }
  return JSON.stringify(out);
}

/**
 * Start the daemon and resolve once it has shut down after SIGTERM/SIGINT.
 * @throws {PhysmemError} what {@link startServer} throws.
 */
export async function runServe(o: ServeCommandOptions): Promise<void> {
  const opts: ServeOptions = { socket: o.socket, backend: o.backend };
  if (o.size !== undefined) opts.size = o.size;
  if (o.stateDir !== undefined) opts.stateDir = o.stateDir;
  if (o.graceMs !== undefined) opts.graceMs = o.graceMs;
  if (o.quarantineMs !== undefined) opts.quarantineMs = o.quarantineMs;
  if (o.group !== undefined) opts.group = o.group;
  if (o.json === true) opts.log = (line) => process.stderr.write(logLineToJson(line) + '\n');
  if (o.maxWaits !== undefined) opts.maxWaits = o.maxWaits;
  // Listen for signals before the socket exists: a SIGTERM that arrives while
  // starting must still shut down cleanly (exit 0), not kill the process.
  let stopRequested = false;
  let stop: () => void = () => {
    stopRequested = true;
  };
  const onSignal = () => stop();
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    const server = await startServer(opts);
    await new Promise<void>((resolve) => {
      stop = () => {
        server.close().then(resolve, resolve);
      };
      if (stopRequested) stop();
    });
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}
