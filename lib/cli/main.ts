/**
 * The `physmem` command. Exit codes: 0 success, 1 the operation failed
 * (the message says why and what to do), 2 bad usage.
 * @module
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { PhysmemError } from '../errors.js';
import { runDemo } from './demo.js';
import { runStat } from './stat.js';
import { runRegions } from './regions.js';
import { toJson } from './format.js';

/** Exit code: success. */
export const EXIT_OK = 0;
/** Exit code: the operation failed. */
export const EXIT_FAILURE = 1;
/** Exit code: bad command line. */
export const EXIT_USAGE = 2;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
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
    .addOption(new Option('--backend <name>', 'backend to open').choices(['auto', 'devmem', 'fake']).default('auto'))
    .option('--size <bytes>', 'size of a fake pool (e.g. 64M)', parseSize)
    .option('--json', 'print the result as JSON')
    .action((o: { backend: 'auto' | 'devmem' | 'fake'; size?: number; json?: boolean }) => emit(!!o.json, runStat(o)));

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
