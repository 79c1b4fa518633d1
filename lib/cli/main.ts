/**
 * The `physmem` command. Exit codes: 0 success, 1 the operation failed
 * (the message says why and what to do), 2 bad usage.
 * @module
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { moduleRoot } from '../native.js';
import { PhysmemError } from '../errors.js';
import { runDemo } from './demo.js';
import { runStat, STAT_BACKENDS, type StatOptions } from './stat.js';
import { runRegions } from './regions.js';
import { runDoctor } from './doctor.js';
import { toJson } from './format.js';

/** Exit code: success. */
export const EXIT_OK = 0;
/** Exit code: the operation failed. */
export const EXIT_FAILURE = 1;
/** Exit code: bad command line. */
export const EXIT_USAGE = 2;

function version(): string {
  const pkg = JSON.parse(readFileSync(join(moduleRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** A duration option in ms: an integer in [0, 2^31 - 1] (what a timer takes). */
function parseMs(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 2 ** 31 - 1) throw new InvalidArgumentError('expected an integer from 0 to 2147483647 (milliseconds)');
  return Number(value);
}

function parseCount(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 2 ** 31 - 1) throw new InvalidArgumentError('expected an integer from 0 to 2147483647');
  return Number(value);
}

function parseSize(value: string): number {
  const m = /^(\d+)\s*([kmg]?)i?b?$/i.exec(value.trim());
  if (!m) throw new InvalidArgumentError('expected a size such as 65536, 64K, 16M or 1G');
  const n = Number(m[1]) * 1024 ** ' kmg'.indexOf((m[2] || ' ').toLowerCase());
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError('size must be a positive number of bytes');
  return n;
}

function emit(json: boolean, result: { json: unknown; text: string }): void {
  process.stdout.write((json ? toJson(result.json) : result.text) + '\n');
}

/** Build the command tree (exported for tests). */
export function buildProgram(): Command {
  const program = new Command('physmem')
    .description('DMA-capable, physically contiguous memory for Linux userspace drivers')
    .version(version())
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str) })
    .showHelpAfterError('(run with --help for usage)');

  program
    .command('demo')
    .description("allocate, write, read and free a few DMA buffers on the 'auto' backend (the fake one when no reserved memory is found, and it says so)")
    .option('--json', 'print the result as JSON')
    .action((o: { json?: boolean }) => {
      const r = runDemo();
      emit(!!o.json, r);
      if (!(r.json as { ok: boolean }).ok) process.exitCode = EXIT_FAILURE;
    });

  program
    .command('stat')
    .description('show the backend physmem would use here and the memory it manages')
    .addOption(new Option('--backend <name>', 'backend to open').choices([...STAT_BACKENDS]).default('auto'))
    .option('--size <bytes>', 'size of a fake pool, or of a hugepage pool (whole huge pages) (e.g. 64M)', parseSize)
    .option('--json', 'print the result as JSON')
    .action((o: StatOptions & { json?: boolean }) => emit(!!o.json, runStat(o)));

  program
    .command('regions')
    .description('list the reserved memory (above mem=, in memmap= regions) that the devmem backend can use, or explain how to reserve some; exits 1 when none is found')
    .option('--reserve <bytes>', 'size to advise reserving when none is found (e.g. 256M)', parseSize, 64 << 20)
    .option('--json', 'print the result as JSON')
    .action((o: { reserve: number; json?: boolean }) => {
      const r = runRegions({ reserve: o.reserve });
      emit(!!o.json, r);
      if (!r.found) process.exitCode = EXIT_FAILURE;
    });

  program
    .command('doctor')
    .description('check everything the backends need here (reserved memory, /dev/mem, STRICT_DEVMEM, lockdown, huge pages, u-dma-buf, IOMMU, vfio-pci, permissions) and say, per backend, ready or the one thing to do')
    .option('--json', 'print the result as JSON')
    .action((o: { json?: boolean }) => emit(!!o.json, runDoctor()));

  program
    .command('serve')
    .description('serve one pool to many programs on a Unix socket (standalone mode; see docs/service.md); runs until SIGTERM')
    .requiredOption('--socket <path>', 'Unix socket path (its directory is created mode 0700, 0750 with --group)')
    .addOption(new Option('--backend <name>', 'memory to serve').choices(['fake', 'devmem']).default('fake'))
    .option('--size <bytes>', 'size of a fake pool (e.g. 64M)', parseSize)
    .option('--state-dir <dir>', 'journal directory: the live blocks are kept there, so a restarted daemon (even after kill -9) keeps them and clients reclaim theirs with their tokens')
    .option('--grace-ms <n>', 'with --state-dir: how long restored blocks wait to be reclaimed before they are released (default 10000)', parseMs)
    .option('--quarantine-ms <n>', "how long a disconnected client's blocks stay allocated (default 1000)", parseMs)
    .option('--group <name>', 'group allowed to connect (socket mode 0660)')
    .option('--json', 'log one JSON object per event on stderr instead of key=value lines')
    .option('--max-waits <n>', 'most allocations one client may have waiting at once; past it EAGAIN (default 1024)', parseCount)
    .action(async (o: { socket: string; backend: 'fake' | 'devmem'; size?: number; stateDir?: string; graceMs?: number; quarantineMs?: number; group?: string; json?: boolean; maxWaits?: number }, cmd: Command) => {
      if (o.socket === '') cmd.error('error: --socket needs a path, got an empty string', { exitCode: EXIT_USAGE });
      if (o.stateDir === '') cmd.error('error: --state-dir needs a directory path, got an empty string', { exitCode: EXIT_USAGE });
      // Options that would otherwise be ignored silently.
      if (o.graceMs !== undefined && o.stateDir === undefined) cmd.error('error: --grace-ms needs --state-dir (it is the grace period of blocks restored from the journal)', { exitCode: EXIT_USAGE });
      if (o.size !== undefined && o.backend !== 'fake') cmd.error('error: --size is for --backend fake; devmem serves the reserved memory it finds', { exitCode: EXIT_USAGE });
      const { runServe } = await import('../service/cli.js');
      await runServe(o);
    });

  program
    .command('status')
    .description("show a physmem daemon's clients, their blocks, quarantine, free space and memory map")
    .option('--socket <path>', 'the daemon socket (default: $PHYSMEM_SOCKET, else /run/physmem/physmem.sock)')
    .option('--json', 'print the result as JSON')
    .option('--svg <file>', 'also draw the memory map (owners, free space, fragmentation) as an SVG picture')
    .action(async (o: { socket?: string; json?: boolean; svg?: string }) => {
      const { collectStatus, formatStatus, renderStatusSvg } = await import('../service/status.js');
      const r = await collectStatus(o.socket ?? process.env.PHYSMEM_SOCKET ?? '/run/physmem/physmem.sock');
      if (o.svg !== undefined) (await import('node:fs')).writeFileSync(o.svg, renderStatusSvg(r) + '\n');
      emit(!!o.json, { json: r, text: formatStatus(r) });
    });

  return program;
}

/** Run the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT_OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version end here too, with exitCode 0.
      return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    const json = argv.includes('--json');
    if (e instanceof PhysmemError) {
      if (json) process.stdout.write(toJson({ error: { code: e.code, message: e.message, syscall: e.syscall, path: e.path } }) + '\n');
      process.stderr.write(`physmem: ${e.message}\n`);
      return EXIT_FAILURE;
    }
    process.stderr.write(`physmem: unexpected error: ${(e as Error)?.stack ?? String(e)}\n`);
    return EXIT_FAILURE;
  }
}
