// Host side of the real-kernel tests: boots each VM config (scripts/vm/configs.mjs)
// under QEMU, runs test/vm/**/*.guest.test.ts inside with vitest, and reports
// every guest test here as its own test, under the config's name.
//
// Top-level await: the VMs run while this file is collected, so the number and
// names of the tests below come from the guests' reports.
//
// Skipped off Linux/x86_64 and with PHYSMEM_SKIP_VM=1. Otherwise it installs
// what it needs (apt-get, as root) and fails loudly if it cannot.
// Env: PHYSMEM_VM_CONFIGS=mem,memmap   PHYSMEM_VM_FILTERS='["memory"]'   see scripts/vm/README.md
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'vitest';

import {
  DEFAULT_CONFIGS,
  REPO_ROOT,
  getConfig,
  prepare,
  runGuestTests,
  setQuiet,
  vmSkipReason,
  type GuestRun,
  type Prepared,
} from '../../scripts/vm/lib.mjs';

const skipReason = vmSkipReason();

function configNames(): string[] {
  const env = process.env.PHYSMEM_VM_CONFIGS?.trim();
  return env ? env.split(',').map((s) => s.trim()).filter(Boolean) : DEFAULT_CONFIGS;
}

const secs = (ms: number | undefined) => (ms === undefined ? '-' : `${(ms / 1000).toFixed(1)} s`);

/** Why the harness could not get the guest tests to run (distinct from a guest test failing). */
function harnessFailure(r: GuestRun): string | null {
  const tail = `\n--- console tail (${r.logPath}) ---\n${r.consoleTail}`;
  if (!r.booted) {
    const why = r.timedOut ? `no "PHYSMEM-VM: init started" from /init within ${secs(r.bootTimeoutMs)} (PHYSMEM_VM_BOOT_TIMEOUT)` : `QEMU exited (code ${r.qemuExit.code}, signal ${r.qemuExit.signal}) before /init started`;
    return `[${r.config}] guest did not boot: ${why}${r.qemuExit.stderr ? `\nqemu: ${r.qemuExit.stderr}` : ''}${tail}`;
  }
  if (r.initError) return `[${r.config}] guest booted but /init failed: ${r.initError}${tail}`;
  if (r.timedOut) return `[${r.config}] guest booted but the test command did not finish within ${secs(r.timeoutMs)} (PHYSMEM_VM_TIMEOUT)${tail}`;
  if (!r.report) return `[${r.config}] guest booted but vitest produced no report (${r.reportError}; exit code ${r.exitCode}); results kept in ${r.resultsDir}${tail}`;
  return null;
}

if (skipReason) {
  describe.skip(`real-kernel VM tests (skipped: ${skipReason})`, () => {
    it(`skipped: ${skipReason}`, () => {});
  });
} else {
  setQuiet(!process.env.PHYSMEM_VM_VERBOSE);
  const names = configNames();
  // Progress goes straight to stderr: these VMs run while vitest collects this file, for minutes.
  const progress = (line: string) => process.stderr.write(`[vm] ${line}\n`);
  let prep: Prepared | undefined;
  let prepError: unknown;
  progress(`preparing: host packages (apt-get as root if missing), kernel, initramfs; then ${names.length} config(s): ${names.join(', ')}`);
  try {
    prep = await prepare();
    progress(`prepared in ${secs(prep.timings.totalMs)} (kernel ${prep.kernel.pkg})`);
  } catch (e) {
    prepError = e;
    progress(`prepare failed: ${String((e as Error)?.message ?? e)}`);
  }

  if (!prep) {
    it('VM harness: install QEMU/busybox/cpio, fetch the kernel, build the initramfs', () => {
      throw new Error(`VM harness could not prepare the guest (set PHYSMEM_SKIP_VM=1 to skip these tests): ${String((prepError as Error)?.message ?? prepError)}`);
    });
  } else {
    const filters: string[] = process.env.PHYSMEM_VM_FILTERS ? JSON.parse(process.env.PHYSMEM_VM_FILTERS) : [];
    const parallel = Math.max(1, Number(process.env.PHYSMEM_VM_PARALLEL ?? Math.min(os.availableParallelism(), 2)));
    const t0 = Date.now();
    const runs = new Map<string, GuestRun>();
    const queue = [...names];
    const running = new Map<string, number>();
    // A heartbeat while guests run (TCG is slow): which configs, for how long, how many done.
    const heartbeat = setInterval(() => {
      const now = Date.now();
      progress(`${runs.size}/${names.length} configs done; running ${[...running].map(([n, t]) => `${n} (${secs(now - t)})`).join(', ') || '-'}`);
    }, 30_000);
    heartbeat.unref();
    try {
      await Promise.all(
        Array.from({ length: Math.min(parallel, queue.length) }, async () => {
          for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
            running.set(name, Date.now());
            progress(`${name}: booting (config ${names.indexOf(name) + 1} of ${names.length})`);
            const r = await runGuestTests(getConfig(name), prep, { filters });
            running.delete(name);
            runs.set(name, r);
            const counts = r.report ? `${r.report.numPassedTests} passed, ${r.report.numFailedTests} failed` : harnessFailure(r)?.split('\n')[0];
            progress(`${name}: ${counts} in ${secs(r.elapsedMs)} (${runs.size}/${names.length} configs done)`);
          }
        }),
      );
    } finally {
      clearInterval(heartbeat);
    }
    console.log(
      [
        `VM tests: ${names.length} config(s), ${parallel} at a time, ${secs(Date.now() - t0)} in all; prepare ${secs(prep.timings.totalMs)}; kernel ${prep.kernel.pkg}`,
        ...names.map((n) => {
          const r = runs.get(n)!;
          return `  ${n}: /init at ${secs(r.marks.init)}, command at ${secs(r.marks.command)}, guest vitest ${r.vitestDuration ?? '-'}, powered off at ${secs(r.elapsedMs)}; console: ${r.logPath}`;
        }),
      ].join('\n'),
    );

    for (const name of names) {
      const r = runs.get(name)!;
      describe(name, () => {
        const failure = harnessFailure(r);
        it('boots and runs the guest tests', () => {
          if (failure) throw new Error(failure);
        });
        if (!r.report) return;
        for (const file of r.report.testResults) {
          describe(path.relative(REPO_ROOT, file.name), () => {
            if (file.assertionResults.length === 0 && file.status === 'failed') {
              it('loads', () => {
                throw new Error(`[${name}] guest test file failed to run: ${file.message}`);
              });
            }
            for (const t of file.assertionResults) {
              const title = [...t.ancestorTitles, t.title].join(' > ');
              if (t.status === 'passed') it(title, () => {});
              else if (t.status === 'failed') {
                it(title, () => {
                  const msg = t.failureMessages.join('\n').split('\n').filter((l) => !/node_modules\/@vitest|node:internal|new Promise \(/.test(l));
                  const err = new Error(`[${name}] guest test failed: ${msg.join('\n')}`);
                  err.stack = err.message;
                  throw err;
                });
              } else it.skip(title, () => {});
            }
          });
        }
        if (r.exitCode !== 0 && r.report.numFailedTests === 0 && r.report.numFailedTestSuites === 0) {
          it('guest vitest exits with status 0', () => {
            throw new Error(`[${name}] guest vitest exited with status ${r.exitCode} although no test failed; console: ${r.logPath}\n${r.consoleTail}`);
          });
        }
      });
    }
  }
}
