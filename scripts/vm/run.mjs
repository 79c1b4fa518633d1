#!/usr/bin/env node
// Real-kernel VM tests. See scripts/vm/README.md.
//
//   node scripts/vm/run.mjs                     all default configs, through host vitest (test/vm/vm.test.ts)
//   node scripts/vm/run.mjs --config memmap     one config (repeatable, or comma-separated)
//   node scripts/vm/run.mjs --direct            same, without host vitest: boots and prints a summary
//   node scripts/vm/run.mjs -- memory           only guest test files matching "memory"
//   node scripts/vm/run.mjs --prepare           install packages, fetch kernel, build initramfs; no boot
//   node scripts/vm/run.mjs --config mem --cmd 'cat /proc/iomem'   run one command in the guest
//   node scripts/vm/run.mjs --config memmap --shell                 interactive shell (Ctrl-A X quits QEMU)

import { spawnSync } from 'node:child_process';
import path from 'node:path';

import { DEFAULT_CONFIGS, getConfig } from './configs.mjs';
import { REPO_ROOT, boot, log, prepare, runGuestTests, vmSkipReason } from './lib.mjs';

function usage(code) {
  console.log(`usage: node scripts/vm/run.mjs [--config NAME[,NAME]]... [--direct | --prepare | --cmd SHELL-TEXT | --shell] [-- vitest filters]
  env: PHYSMEM_VM_CACHE, PHYSMEM_SKIP_VM, PHYSMEM_VM_TIMEOUT, PHYSMEM_VM_BOOT_TIMEOUT, PHYSMEM_VM_KEEP, PHYSMEM_VM_PARALLEL`);
  process.exit(code);
}

const argv = process.argv.slice(2);
const opts = { configs: [], mode: 'vitest', cmd: null, filters: [] };
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--') {
    opts.filters = argv.slice(i + 1);
    break;
  } else if (a === '--config' || a === '-c') opts.configs.push(...argv[++i].split(','));
  else if (a.startsWith('--config=')) opts.configs.push(...a.slice(9).split(','));
  else if (a === '--direct') opts.mode = 'direct';
  else if (a === '--prepare') opts.mode = 'prepare';
  else if (a === '--shell') opts.mode = 'shell';
  else if (a === '--cmd') {
    opts.mode = 'cmd';
    opts.cmd = argv[++i];
  } else if (a === '-h' || a === '--help') usage(0);
  else {
    console.error(`unknown argument ${a}`);
    usage(2);
  }
}
try {
  opts.configs.forEach(getConfig); // validate names early
} catch (e) {
  console.error(e.message);
  process.exit(2);
}
const configs = opts.configs.length ? opts.configs : DEFAULT_CONFIGS;

const skip = vmSkipReason();
if (skip && opts.mode !== 'vitest') {
  console.error(`VM tests cannot run here: ${skip}`);
  process.exit(opts.mode === 'prepare' ? 0 : 1);
}

if (opts.mode === 'vitest') {
  // Host vitest does the work (and the skip) in test/vm/vm.test.ts; it gets
  // the config list and filters through the environment. Prepare here first so
  // that installing/downloading shows progress (vitest would be silent).
  if (!skip) {
    try {
      const prep = await prepare();
      log(`kernel ${prep.kernel.pkg}, initramfs ${path.basename(prep.initramfs)}; prepared in ${(prep.timings.totalMs / 1000).toFixed(1)} s`);
    } catch (e) {
      log(`prepare failed (vitest will report it): ${e.message}`);
    }
  }
  const env = { ...process.env };
  if (opts.configs.length) env.PHYSMEM_VM_CONFIGS = opts.configs.join(',');
  if (opts.filters.length) env.PHYSMEM_VM_FILTERS = JSON.stringify(opts.filters);
  const r = spawnSync(
    process.execPath,
    [path.join(REPO_ROOT, 'node_modules/vitest/vitest.mjs'), 'run', '--config', 'test/vm/vitest.host.config.mjs'],
    { cwd: REPO_ROOT, stdio: 'inherit', env },
  );
  process.exit(r.status ?? 1);
}

const t0 = Date.now();
const prep = await prepare();
log(`kernel ${prep.kernel.pkg} (${prep.kernel.release}), initramfs ${path.basename(prep.initramfs)}; prepared in ${(prep.timings.totalMs / 1000).toFixed(1)} s`);
if (opts.mode === 'prepare') process.exit(0);

if (opts.mode === 'cmd' || opts.mode === 'shell') {
  const name = configs[0];
  log(`booting ${name}${opts.mode === 'shell' ? ' (interactive; Ctrl-A X kills QEMU)' : ''}`);
  const r = await boot({
    config: name,
    prep,
    command: opts.mode === 'shell' ? 'exec /bin/bash -i' : opts.cmd,
    interactive: true,
  });
  log(`console log: ${r.logPath}; results: ${r.resultsDir}`);
  if (!r.booted) {
    console.error(`guest did not boot${r.timedOut ? ' (timeout)' : ''}`);
    process.exit(1);
  }
  log(`exit code ${r.exitCode} after ${(r.elapsedMs / 1000).toFixed(1)} s`);
  process.exit(r.exitCode ?? 1);
}

// --direct: boot each config, run the guest tests, print a summary.
const parallel = Math.max(1, Number(process.env.PHYSMEM_VM_PARALLEL ?? 2));
const results = [];
const queue = [...configs];
await Promise.all(
  Array.from({ length: Math.min(parallel, queue.length) }, async () => {
    while (queue.length) {
      const name = queue.shift();
      log(`booting ${name}`);
      const r = await runGuestTests(name, prep, { filters: opts.filters });
      log(`${name}: done in ${(r.elapsedMs / 1000).toFixed(1)} s`);
      results.push(r);
    }
  }),
);
let passed = 0;
let failed = 0;
let skipped = 0;
for (const r of results) {
  const m = r.marks;
  console.log(`\n== ${r.config}: init ${m.init ?? '-'} ms, command ${m.command ?? '-'} ms, exit ${m.exit ?? '-'} ms; vitest: ${r.vitestDuration ?? '-'}; log ${r.logPath}`);
  if (!r.booted) {
    failed++;
    console.log(`FAIL ${r.config}: guest did not boot${r.timedOut ? ' (timeout)' : ''}\n${r.consoleTail}`);
    continue;
  }
  if (!r.report) {
    failed++;
    console.log(`FAIL ${r.config}: ${r.initError ? `init failed: ${r.initError}` : r.reportError} (exit ${r.exitCode}${r.timedOut ? `, ${r.timedOut} timeout` : ''})\n${r.consoleTail}`);
    continue;
  }
  for (const f of r.report.testResults) {
    const file = path.relative(REPO_ROOT, f.name);
    if (f.assertionResults.length === 0 && f.status === 'failed') {
      failed++;
      console.log(`FAIL ${r.config} > ${file}: ${f.message}`);
    }
    for (const t of f.assertionResults) {
      const name = `${r.config} > ${file} > ${[...t.ancestorTitles, t.title].join(' > ')}`;
      if (t.status === 'passed') passed++, console.log(`ok   ${name}`);
      else if (t.status === 'failed') failed++, console.log(`FAIL ${name}\n${t.failureMessages.join('\n')}`);
      else skipped++, console.log(`skip ${name}`);
    }
  }
  if (r.exitCode !== 0 && r.report.numFailedTests === 0) {
    failed++;
    console.log(`FAIL ${r.config}: guest vitest exited ${r.exitCode}`);
  }
}
console.log(`\nVM total ${((Date.now() - t0) / 1000).toFixed(1)} s`);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed ? 1 : 0);
