// A child process that reports the outcome of one operation as a JSON line on
// stdout and then stays alive or exits: used by the lock tests on the host and
// in the guest, where POSIX locks make "another process" the only real test.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/** What a child script prints first: did its open succeed, and if not, the error. */
export interface ChildResult {
  ok: boolean;
  code?: string;
  message?: string;
}

/**
 * Run `node ...args` and resolve with the child and the first JSON line it prints.
 * Rejects if it exits first or says nothing within `timeoutMs`.
 */
export function startJsonChild(args: string[], timeoutMs: number): Promise<{ child: ChildProcess; result: ChildResult }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`child did not answer in ${timeoutMs / 1000} s; stderr: ${err}`)), timeoutMs);
    child.stderr.on('data', (d) => (err += d));
    child.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      resolve({ child, result: JSON.parse(out.slice(0, nl)) as ChildResult });
    });
    child.on('exit', (code) => {
      if (out.indexOf('\n') < 0) {
        clearTimeout(timer);
        reject(new Error(`child exited (${code}) before answering; stderr: ${err}`));
      }
    });
  });
}

/** A child whose stdout is read line by line. */
export interface LineChild {
  child: ChildProcess;
  /** Its next stdout line (waits for it). */
  line: () => Promise<string>;
  /** Resolves with the exit code (null when killed by a signal). */
  exit: Promise<number | null>;
  /** Everything it wrote to stderr so far. */
  stderr: () => string;
}

/**
 * Run `node ...args`, reading stdout line by line. `track` holds the child
 * until it exits, so an afterAll can kill whatever is left.
 */
export function startLineChild(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; track?: Set<ChildProcess> } = {}): LineChild {
  const child = spawn(process.execPath, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
  options.track?.add(child);
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const lines: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    const w = waiters.shift();
    if (w) w(l);
    else lines.push(l);
  });
  const exit = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      options.track?.delete(child);
      resolve(code);
    }),
  );
  return { child, exit, stderr: () => err, line: () => (lines.length ? Promise.resolve(lines.shift()!) : new Promise((r) => waiters.push(r))) };
}
