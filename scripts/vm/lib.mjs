// Real-kernel VM harness: host packages, a cached Debian kernel, a cached
// initramfs, and QEMU boots that run one command as root in a chroot of the
// host's / (shared read-only over 9p), with a writable 9p export for results.
//
// Plain ESM JavaScript, no build step. Used by scripts/vm/run.mjs and
// test/vm/vm.test.ts. See scripts/vm/README.md.

import { execFile, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { BASE_MODULES, CONFIGS, DEFAULT_CONFIGS, EDU_DEVICE, INITRAMFS_MODULES, getConfig, guestTestSelection } from './configs.mjs';

const execFileP = promisify(execFile);

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..');

/** Where the guest sees the results export (inside the chroot of host /). */
export const GUEST_RESULTS = '/tmp/physmem-vm-results';

const APT_PACKAGES = [
  // [package, a file it provides that we need]
  ['qemu-system-x86', '/usr/bin/qemu-system-x86_64'],
  ['busybox-static', '/bin/busybox'],
  ['cpio', '/usr/bin/cpio'],
];

export const MARK = {
  init: 'PHYSMEM-VM: init started',
  mounted: 'PHYSMEM-VM: mounted',
  command: 'PHYSMEM-VM: command start',
  exit: 'PHYSMEM-VM: exit ',
  fail: 'PHYSMEM-VM: init failed: ',
};

export function cacheDir() {
  return path.resolve(process.env.PHYSMEM_VM_CACHE || path.join(REPO_ROOT, '.vm-cache'));
}

let quiet = false;
export function setQuiet(q) {
  quiet = q;
}
export function log(...args) {
  if (!quiet) process.stderr.write(`[vm] ${args.join(' ')}\n`);
}

/** Why the VM tests cannot run here, or null when they can. */
export function vmSkipReason(env = process.env) {
  if (env.PHYSMEM_SKIP_VM === '1') return 'PHYSMEM_SKIP_VM=1';
  if (process.platform !== 'linux') return `needs Linux (this is ${process.platform})`;
  if (process.arch !== 'x64') return `needs x86_64 (this is ${process.arch})`;
  return null;
}

function haveCommand(p) {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function run(cmd, args, opts = {}) {
  try {
    return await execFileP(cmd, args, { maxBuffer: 64 << 20, ...opts });
  } catch (e) {
    const out = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim().split('\n').slice(-20).join('\n');
    throw new Error(`${cmd} ${args.join(' ')} failed (${e.code ?? e.signal}):\n${out}`, { cause: e });
  }
}

let aptUpdated = false;
async function aptUpdate() {
  if (aptUpdated) return;
  log('apt-get update');
  await run('apt-get', ['update'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  aptUpdated = true;
}

function requireRoot(what) {
  if (process.getuid && process.getuid() !== 0) {
    throw new Error(`${what} needs root (apt-get). Run as root, install it yourself, or set PHYSMEM_SKIP_VM=1 to skip the VM tests.`);
  }
}

/** apt-get install whatever of qemu-system-x86, busybox-static, cpio is missing. */
export async function ensureHostPackages() {
  const missing = APT_PACKAGES.filter(([, file]) => !haveCommand(file)).map(([pkg]) => pkg);
  if (missing.length === 0) return { installed: [] };
  requireRoot(`installing ${missing.join(', ')}`);
  await aptUpdate();
  log(`apt-get install ${missing.join(' ')}`);
  await run('apt-get', ['install', '-y', '--no-install-recommends', ...missing], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  const still = APT_PACKAGES.filter(([, file]) => !haveCommand(file)).map(([, f]) => f);
  if (still.length) throw new Error(`still missing after apt-get install: ${still.join(', ')}`);
  return { installed: missing };
}

async function kernelPackageName() {
  if (process.env.PHYSMEM_VM_KERNEL_PKG) return process.env.PHYSMEM_VM_KERNEL_PKG;
  const find = async () => {
    try {
      const { stdout } = await run('apt-cache', ['depends', 'linux-image-amd64']);
      const m = stdout.match(/Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b/);
      return m ? m[1] : null;
    } catch {
      return null;
    }
  };
  let name = await find();
  if (!name) {
    requireRoot('looking up the kernel package');
    await aptUpdate();
    name = await find();
  }
  if (!name) throw new Error('could not find the kernel package: `apt-cache depends linux-image-amd64` names no linux-image-*-amd64');
  return name;
}

/**
 * The Debian kernel, downloaded and extracted once into <cache>/kernel/<pkg>.
 * @returns {Promise<{pkg:string, release:string, dir:string, vmlinuz:string, modulesDir:string}>}
 */
export async function ensureKernel() {
  const root = path.join(cacheDir(), 'kernel');
  fs.mkdirSync(root, { recursive: true });
  const describe = (pkg) => {
    const dir = path.join(root, pkg);
    const modRoot = path.join(dir, 'lib', 'modules');
    const release = fs.readdirSync(modRoot)[0];
    return { pkg, release, dir, vmlinuz: path.join(dir, 'boot', `vmlinuz-${release}`), modulesDir: path.join(modRoot, release) };
  };
  // Reuse whatever is cached (no network on a warm cache) unless a package is forced.
  const wanted = process.env.PHYSMEM_VM_KERNEL_PKG;
  const cached = fs.readdirSync(root).filter((d) => fs.existsSync(path.join(root, d, '.complete'))).sort();
  const hit = wanted ? cached.find((d) => d === wanted) : cached.at(-1);
  if (hit) return describe(hit);

  const pkg = await kernelPackageName();
  const dl = fs.mkdtempSync(path.join(root, '.download-'));
  try {
    log(`apt-get download ${pkg}`);
    await run('apt-get', ['download', pkg], { cwd: dl });
    const debs = fs.readdirSync(dl).filter((f) => f.endsWith('.deb'));
    if (debs.length !== 1) throw new Error(`apt-get download ${pkg} produced ${debs.length} .deb files`);
    const x = path.join(dl, 'x');
    log(`dpkg -x ${debs[0]}`);
    await run('dpkg', ['-x', path.join(dl, debs[0]), x]);
    fs.writeFileSync(path.join(x, '.complete'), `${debs[0]}\n`);
    const dest = path.join(root, pkg);
    // Another run may have finished the same download meanwhile: keep theirs.
    if (!fs.existsSync(path.join(dest, '.complete'))) {
      fs.rmSync(dest, { recursive: true, force: true });
      fs.renameSync(x, dest);
    }
  } finally {
    fs.rmSync(dl, { recursive: true, force: true });
  }
  return describe(pkg);
}

// ---------------------------------------------------------------------------
// Kernel modules: dependency closure read from each .ko's .modinfo strings.

function modName(s) {
  return s.replace(/\.ko(\.[a-z]+)?$/, '').replace(/-/g, '_');
}

function indexModules(modulesDir) {
  /** @type {Map<string,string>} normalized name -> path relative to modulesDir */
  const byName = new Map();
  const walk = (rel) => {
    for (const e of fs.readdirSync(path.join(modulesDir, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) walk(r);
      else if (/\.ko(\.(xz|zst|gz))?$/.test(e.name)) byName.set(modName(e.name), r);
    }
  };
  walk('kernel');
  return byName;
}

function moduleDepends(file) {
  if (!file.endsWith('.ko')) throw new Error(`compressed kernel module not supported: ${file}`);
  const buf = fs.readFileSync(file);
  const key = Buffer.from('\0depends=');
  const i = buf.indexOf(key);
  if (i < 0) return [];
  const start = i + key.length;
  const end = buf.indexOf(0, start);
  const v = buf.subarray(start, end).toString('latin1');
  return v ? v.split(',').map(modName) : [];
}

/** Modules to load, dependencies first, for each requested module. */
function resolveModules(modulesDir, wanted) {
  const byName = indexModules(modulesDir);
  const deps = new Map();
  const order = (name, out, seen) => {
    const n = modName(name);
    if (seen.has(n)) return;
    seen.add(n);
    const rel = byName.get(n);
    if (!rel) throw new Error(`kernel module ${name} not found under ${modulesDir} (built in? then drop it from the list)`);
    if (!deps.has(n)) deps.set(n, moduleDepends(path.join(modulesDir, rel)));
    for (const d of deps.get(n)) order(d, out, seen);
    out.push(n);
  };
  const perModule = {};
  const all = new Set();
  for (const w of wanted) {
    const out = [];
    order(w, out, new Set());
    perModule[modName(w)] = out;
    out.forEach((m) => all.add(m));
  }
  return { perModule, files: [...all].map((n) => [n, byName.get(n)]) };
}

// ---------------------------------------------------------------------------
// initramfs

/**
 * Build (or reuse) <cache>/initramfs-<hash>.cpio.gz: busybox-static, the
 * modules, /init. The hash covers everything that goes into it.
 */
export async function ensureInitramfs(kernel) {
  const initScript = fs.readFileSync(path.join(HERE, 'init.sh'));
  const busybox = fs.readFileSync('/bin/busybox');
  const h = createHash('sha256')
    .update(initScript)
    .update(createHash('sha256').update(busybox).digest())
    .update(kernel.pkg)
    .update(JSON.stringify([BASE_MODULES, INITRAMFS_MODULES]))
    .digest('hex')
    .slice(0, 16);
  const out = path.join(cacheDir(), `initramfs-${h}.cpio.gz`);
  if (fs.existsSync(out)) return out;

  log(`building initramfs ${path.basename(out)}`);
  const { perModule, files } = resolveModules(kernel.modulesDir, INITRAMFS_MODULES);
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'physmem-initramfs-'));
  try {
    for (const d of ['bin', 'sbin', 'dev', 'proc', 'sys', 'tmp', 'host', 'results', 'etc/physmem', 'lib/modules/load']) {
      fs.mkdirSync(path.join(stage, d), { recursive: true });
    }
    fs.copyFileSync('/bin/busybox', path.join(stage, 'bin/busybox'));
    fs.chmodSync(path.join(stage, 'bin/busybox'), 0o755);
    const applets = spawnSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
    for (const a of applets) {
      if (a === 'busybox') continue;
      fs.symlinkSync('busybox', path.join(stage, 'bin', a));
    }
    for (const [name, rel] of files) {
      fs.copyFileSync(path.join(kernel.modulesDir, rel), path.join(stage, 'lib/modules', `${name}.ko`));
    }
    // /lib/modules/load/<name>: the .ko files to insmod, dependencies first.
    for (const [name, list] of Object.entries(perModule)) {
      fs.writeFileSync(path.join(stage, 'lib/modules/load', name), list.map((m) => `/lib/modules/${m}.ko`).join('\n') + '\n');
    }
    fs.writeFileSync(path.join(stage, 'etc/physmem/base-modules'), BASE_MODULES.map(modName).join('\n') + '\n');
    fs.writeFileSync(path.join(stage, 'etc/physmem/kernel'), `${kernel.pkg} ${kernel.release}\n`);
    fs.copyFileSync(path.join(HERE, 'init.sh'), path.join(stage, 'init'));
    fs.chmodSync(path.join(stage, 'init'), 0o755);

    const tmp = `${out}.tmp-${process.pid}`;
    const r = spawnSync('/bin/sh', ['-c', `find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 > '${tmp}'`], {
      cwd: stage,
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`cpio/gzip failed: ${r.stderr}`);
    fs.renameSync(tmp, out);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
  return out;
}

/** Everything a boot needs, installed/downloaded/built as necessary. */
export async function prepare() {
  const t0 = Date.now();
  const pkgs = await ensureHostPackages();
  const t1 = Date.now();
  const kernel = await ensureKernel();
  const t2 = Date.now();
  const initramfs = await ensureInitramfs(kernel);
  const t3 = Date.now();
  return {
    kernel,
    initramfs,
    installed: pkgs.installed,
    timings: { packagesMs: t1 - t0, kernelMs: t2 - t1, initramfsMs: t3 - t2, totalMs: t3 - t0 },
  };
}

// ---------------------------------------------------------------------------
// Booting

function shq(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}

function setupScript(config) {
  // Runs in the initramfs' busybox sh (see init.sh) after the mounts, before the chroot.
  const lines = ['# generated by scripts/vm/lib.mjs'];
  for (const m of config.modules ?? []) lines.push(`load_module ${shq(modName(m))} || fail "module ${m}"`);
  if (config.hugepages) {
    lines.push(`echo ${config.hugepages} > /proc/sys/vm/nr_hugepages`);
    lines.push(`[ "$(cat /proc/sys/vm/nr_hugepages)" = ${config.hugepages} ] || fail "nr_hugepages is $(cat /proc/sys/vm/nr_hugepages), wanted ${config.hugepages}"`);
  }
  return lines.join('\n') + '\n';
}

function commandScript(config, command, extraEnv) {
  const nodeDir = path.dirname(process.execPath);
  const env = {
    PATH: [...new Set([nodeDir, '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'])].join(':'),
    HOME: '/tmp/home',
    TMPDIR: '/tmp',
    LANG: 'C.UTF-8',
    TERM: process.env.TERM && process.env.TERM !== 'dumb' ? process.env.TERM : 'vt100',
    PHYSMEM_VM_GUEST: '1',
    PHYSMEM_VM_CONFIG: config.name,
    PHYSMEM_VM_RESULTS: GUEST_RESULTS,
    PHYSMEM_VM_EXPECT: `${GUEST_RESULTS}/config.json`,
    // Read by test/vm/vitest.guest.config.mjs: the guest test files of this boot.
    PHYSMEM_VM_TESTS: JSON.stringify(guestTestSelection(config)),
    ...extraEnv,
  };
  return [
    '# generated by scripts/vm/lib.mjs; runs in the chroot of the host /',
    ...Object.entries(env).map(([k, v]) => `export ${k}=${shq(v)}`),
    'mkdir -p "$HOME"',
    `cd ${shq(REPO_ROOT)} || exit 97`,
    `echo ${shq(MARK.command)}`,
    command,
    '',
  ].join('\n');
}

export function qemuArgs(config, prep, resultsDir) {
  const kargs = ['console=ttyS0', 'panic=-1', ...(config.kernelArgs ?? [])];
  if (process.env.PHYSMEM_VM_KERNEL_ARGS) kargs.push(...process.env.PHYSMEM_VM_KERNEL_ARGS.split(/\s+/).filter(Boolean));
  return [
    '-accel', 'tcg',
    '-cpu', process.env.PHYSMEM_VM_CPU || 'max',
    '-m', config.memory ?? '512M',
    '-smp', String(config.smp ?? 1),
    '-nographic', '-no-reboot', '-net', 'none',
    ...(config.qemuArgs ?? []),
    '-kernel', prep.kernel.vmlinuz,
    '-initrd', prep.initramfs,
    '-append', kargs.join(' '),
    '-virtfs', 'local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap',
    '-virtfs', `local,path=${resultsDir.replace(/,/g, ',,')},mount_tag=results,security_model=none,multidevs=remap`,
    ...Array.from({ length: config.edu === true ? 1 : Number(config.edu ?? 0) }, () => EDU_DEVICE).flat(),
  ];
}

/**
 * Boot `config` and run `command` (shell text, run by the host's /bin/sh in
 * the guest, cwd = repo root, as root).
 *
 * @param {object} o
 * @param {string|object} o.config       config name or object
 * @param {object} o.prep                result of prepare()
 * @param {string} [o.command]
 * @param {boolean} [o.interactive]      console on this terminal (stdin/stdout), no timeout
 * @param {number} [o.bootTimeoutMs]     until /init's first marker
 * @param {number} [o.timeoutMs]         whole boot
 * @param {Record<string,string>} [o.env] extra env for the command
 * @param {(line:string)=>void} [o.onLine]
 */
export async function boot(o) {
  const config = typeof o.config === 'string' ? getConfig(o.config) : o.config;
  const prep = o.prep;
  const bootTimeoutMs = o.bootTimeoutMs ?? Number(process.env.PHYSMEM_VM_BOOT_TIMEOUT ?? 90) * 1000;
  const timeoutMs = o.timeoutMs ?? Number(process.env.PHYSMEM_VM_TIMEOUT ?? config.timeoutSeconds ?? 720) * 1000;
  const resultsDir = fs.mkdtempSync(path.join(os.tmpdir(), `physmem-vm-${config.name}-`));
  const logDir = path.join(cacheDir(), 'logs');
  fs.mkdirSync(logDir, { recursive: true });
  const logPath = path.join(logDir, `${config.name}-console.log`);

  fs.writeFileSync(
    path.join(resultsDir, 'config.json'),
    JSON.stringify({ name: config.name, description: config.description, kernelArgs: config.kernelArgs, memory: config.memory, ...config.expect }, null, 2),
  );
  fs.writeFileSync(path.join(resultsDir, 'setup.sh'), setupScript(config));
  fs.writeFileSync(path.join(resultsDir, 'repo-root'), `${REPO_ROOT}\n`);
  fs.writeFileSync(path.join(resultsDir, 'cmd.sh'), commandScript(config, o.command ?? 'exec /bin/sh -i', o.env ?? {}));
  if (o.interactive) fs.writeFileSync(path.join(resultsDir, 'interactive'), '');

  const args = qemuArgs(config, prep, resultsDir);
  const started = Date.now();
  const logFd = fs.openSync(logPath, 'w');
  fs.writeSync(logFd, `# qemu-system-x86_64 ${args.map((a) => (/[\s$'"]/.test(a) ? shq(a) : a)).join(' ')}\n`);

  const child = spawn('qemu-system-x86_64', args, { stdio: [o.interactive ? 'inherit' : 'pipe', 'pipe', 'pipe'] });
  const marks = {};
  const tail = [];
  let initError = null;
  let exitFromConsole = null;
  let partial = '';
  const onLine = (raw) => {
    const line = raw.replace(/\r$/, '');
    const t = Date.now() - started;
    fs.writeSync(logFd, `[${(t / 1000).toFixed(3).padStart(8)}] ${line}\n`);
    tail.push(line);
    if (tail.length > 60) tail.shift();
    if (line.includes(MARK.init)) marks.init ??= t;
    if (line.includes(MARK.mounted)) marks.mounted ??= t;
    if (line.includes(MARK.command)) marks.command ??= t;
    if (line.includes(MARK.fail)) initError = line.slice(line.indexOf(MARK.fail) + MARK.fail.length);
    const i = line.indexOf(MARK.exit);
    if (i >= 0) {
      marks.exit ??= t;
      exitFromConsole = Number(line.slice(i + MARK.exit.length).trim());
    }
    o.onLine?.(line, t);
  };
  child.stdout.on('data', (d) => {
    if (o.interactive) process.stdout.write(d);
    partial += d.toString('utf8');
    const lines = partial.split('\n');
    partial = lines.pop();
    lines.forEach(onLine);
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    if (o.interactive) process.stderr.write(d);
  });

  let timedOut = null;
  const killer = (why) => {
    if (timedOut) return;
    timedOut = why;
    child.kill('SIGKILL');
  };
  const bootTimer = setTimeout(() => marks.init === undefined && killer('boot'), bootTimeoutMs);
  const totalTimer = o.interactive ? null : setTimeout(() => killer('command'), timeoutMs);

  let spawnError = null;
  const { code, signal } = await new Promise((resolve) => {
    child.on('error', (e) => {
      spawnError = e;
      resolve({ code: null, signal: null });
    });
    child.on('close', (c, s) => resolve({ code: c, signal: s }));
  });
  if (spawnError) stderr += `${stderr ? '\n' : ''}spawn qemu-system-x86_64: ${spawnError.message}`;
  clearTimeout(bootTimer);
  if (totalTimer) clearTimeout(totalTimer);
  if (partial) onLine(partial);
  const elapsedMs = Date.now() - started;
  fs.writeSync(logFd, `# qemu exited code=${code} signal=${signal} after ${elapsedMs} ms${timedOut ? ` (killed: ${timedOut} timeout)` : ''}\n`);
  if (stderr) fs.writeSync(logFd, `# qemu stderr:\n${stderr}\n`);
  fs.closeSync(logFd);

  let exitCode;
  try {
    exitCode = Number(fs.readFileSync(path.join(resultsDir, 'exit-code'), 'utf8').trim());
  } catch {
    exitCode = exitFromConsole;
  }
  return {
    config: config.name,
    booted: marks.init !== undefined,
    ran: marks.command !== undefined,
    exitCode,
    initError,
    timedOut,
    bootTimeoutMs,
    timeoutMs,
    qemuExit: { code, signal, stderr: stderr.trim() },
    marks,
    elapsedMs,
    logPath,
    resultsDir,
    consoleTail: tail.join('\n'),
  };
}

// ---------------------------------------------------------------------------
// Guest tests

export const GUEST_VITEST_CONFIG = 'test/vm/vitest.guest.config.mjs';

/** Shell command that runs the guest test files with vitest inside the guest. */
export function guestVitestCommand(filters = []) {
  const args = [
    'node_modules/vitest/vitest.mjs', 'run',
    '--config', GUEST_VITEST_CONFIG,
    '--configLoader', 'native',
    // A filter (or a config's guestTests) may leave no file in this boot: not a failure.
    '--passWithNoTests',
    ...filters,
  ];
  return `node ${args.map(shq).join(' ')}`;
}

/**
 * Boot `config`, run the guest tests, and read vitest's JSON report back.
 * @returns {Promise<object>} boot() result plus `report` (vitest JSON or null)
 *   and `reportError`.
 */
export async function runGuestTests(config, prep, { filters = [], ...rest } = {}) {
  const r = await boot({ config, prep, command: guestVitestCommand(filters), ...rest });
  let report = null;
  let reportError = null;
  try {
    report = JSON.parse(fs.readFileSync(path.join(r.resultsDir, 'vitest.json'), 'utf8'));
  } catch (e) {
    reportError = e.code === 'ENOENT' ? 'the guest wrote no vitest.json' : String(e);
  }
  // vitest prints "Duration  12.3s (transform .., setup .., collect .., tests .., ...)"
  const consoleText = fs.readFileSync(r.logPath, 'utf8');
  const dur = consoleText.match(/Duration\s+(.*)$/m);
  // eslint-disable-next-line no-control-regex -- strips the ANSI colour codes vitest writes to the console
  r.vitestDuration = dur ? dur[1].replace(/\x1b\[[0-9;]*m/g, '').trim() : null;
  if (!process.env.PHYSMEM_VM_KEEP && r.exitCode === 0 && report) fs.rmSync(r.resultsDir, { recursive: true, force: true });
  return { ...r, report, reportError };
}

export { CONFIGS, DEFAULT_CONFIGS, getConfig };
