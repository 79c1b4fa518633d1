// Types for scripts/vm/lib.mjs (used by test/vm/vm.test.ts).

export interface VmConfig {
  name: string;
  description: string;
  memory: string;
  smp?: number;
  kernelArgs: string[];
  qemuArgs?: string[];
  edu?: boolean;
  hugepages?: number;
  modules?: string[];
  optional?: boolean;
  expect: Record<string, unknown>;
}

export interface Kernel {
  pkg: string;
  release: string;
  dir: string;
  vmlinuz: string;
  modulesDir: string;
}

export interface Prepared {
  kernel: Kernel;
  initramfs: string;
  installed: string[];
  timings: { packagesMs: number; kernelMs: number; initramfsMs: number; totalMs: number };
}

export interface BootResult {
  config: string;
  /** /init printed its first marker. */
  booted: boolean;
  /** The command started in the chroot. */
  ran: boolean;
  exitCode: number | null;
  initError: string | null;
  timedOut: 'boot' | 'command' | null;
  bootTimeoutMs: number;
  timeoutMs: number;
  qemuExit: { code: number | null; signal: string | null; stderr: string };
  /** ms after QEMU start at which each console marker was seen. */
  marks: { init?: number; mounted?: number; command?: number; exit?: number };
  elapsedMs: number;
  logPath: string;
  resultsDir: string;
  consoleTail: string;
}

export interface VitestAssertion {
  ancestorTitles: string[];
  fullName: string;
  status: 'passed' | 'failed' | 'skipped' | 'pending' | 'todo' | 'disabled';
  title: string;
  duration?: number | null;
  failureMessages: string[];
}

export interface VitestJsonReport {
  numFailedTests: number;
  numFailedTestSuites: number;
  numPassedTests: number;
  numTotalTests: number;
  success: boolean;
  testResults: { name: string; status: string; message: string; assertionResults: VitestAssertion[] }[];
}

export interface GuestRun extends BootResult {
  report: VitestJsonReport | null;
  reportError: string | null;
  vitestDuration: string | null;
}

export const HERE: string;
export const REPO_ROOT: string;
export const GUEST_RESULTS: string;
export const GUEST_VITEST_CONFIG: string;
export const CONFIGS: VmConfig[];
export const DEFAULT_CONFIGS: string[];
export const MARK: Record<'init' | 'mounted' | 'command' | 'exit' | 'fail', string>;
export function getConfig(name: string): VmConfig;
export function cacheDir(): string;
export function setQuiet(q: boolean): void;
export function log(...args: unknown[]): void;
export function vmSkipReason(env?: NodeJS.ProcessEnv): string | null;
export function ensureHostPackages(): Promise<{ installed: string[] }>;
export function ensureKernel(): Promise<Kernel>;
export function ensureInitramfs(kernel: Kernel): Promise<string>;
export function prepare(): Promise<Prepared>;
export function qemuArgs(config: VmConfig, prep: Prepared, resultsDir: string): string[];
export function boot(o: {
  config: string | VmConfig;
  prep: Prepared;
  command?: string;
  interactive?: boolean;
  bootTimeoutMs?: number;
  timeoutMs?: number;
  env?: Record<string, string>;
  onLine?: (line: string, ms: number) => void;
}): Promise<BootResult>;
export function guestVitestCommand(filters?: string[]): string;
export function runGuestTests(
  config: string | VmConfig,
  prep: Prepared,
  opts?: { filters?: string[]; bootTimeoutMs?: number; timeoutMs?: number; env?: Record<string, string> },
): Promise<GuestRun>;
