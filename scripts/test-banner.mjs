// Printed by `npm test` before vitest starts: what the run will do, up front,
// including that the VM part may install packages with apt-get.
import { DEFAULT_CONFIGS, vmSkipReason } from './vm/lib.mjs';

const skip = vmSkipReason();
const configs = process.env.PHYSMEM_VM_CONFIGS?.trim() ? process.env.PHYSMEM_VM_CONFIGS.split(',').map((s) => s.trim()) : DEFAULT_CONFIGS;
const lines = ['npm test: the host tests (vitest), then the real-kernel tests in QEMU'];
if (skip) {
  lines.push(`  VM tests skipped: ${skip}`);
} else {
  lines.push(`  VM configs: ${configs.join(', ')} (progress lines start with [vm]; PHYSMEM_SKIP_VM=1 skips them)`);
  if (process.geteuid?.() === 0) {
    lines.push('  Running as root: QEMU (qemu-system-x86), busybox-static and cpio are installed with apt-get if missing,');
    lines.push("  and Debian's kernel package is fetched with apt-get download into $PHYSMEM_VM_CACHE (or .vm-cache).");
  } else {
    lines.push('  Not root: nothing is installed; the VM tests fail if QEMU, busybox-static or cpio is missing.');
  }
}
process.stdout.write(lines.join('\n') + '\n\n');
