// Boot configurations for the real-kernel VM tests, and what each one implies.
//
// Every config is booted once by `node scripts/vm/run.mjs` / test/vm/vm.test.ts.
// The `expect` object is handed to the guest verbatim (as JSON, see
// test/vm/guest.ts) so guest tests can assert what discovery must find.
//
// Addresses are what QEMU 7.2 (pc machine, SeaBIOS) + Debian's 6.1 kernel show
// with `-m 512M`; they were checked in a real guest.

/** Guest RAM as the firmware reports it on the pc machine (0x1ffe0000.. is Reserved: ACPI). */
const FIRMWARE_RAM_512M = { start: 0x100000, end: 0x1ffdffff };
/** With an NVMe controller, SeaBIOS's NVMe driver keeps 36 KiB more at the top (0x1ffd7000.. is Reserved). */
const FIRMWARE_RAM_512M_NVME = { start: 0x100000, end: 0x1ffd6fff };

/** With mem=384M the kernel uses System RAM only up to here. */
const MEM_LIMIT_384M = 0x18000000;

/**
 * @typedef {object} Region
 * @property {number} start  first byte (physical address)
 * @property {number} end    last byte, inclusive (as /proc/iomem prints it)
 * @property {string} kind   'above-mem' (firmware RAM above mem=, in no iomem entry)
 *                           | 'memmap-reserved' (memmap=nn$ss, shows as "Reserved")
 *
 * @typedef {object} VmConfig
 * @property {string}   name
 * @property {string}   description
 * @property {string}   memory        QEMU -m
 * @property {number}   [smp]         guest CPUs (default 1)
 * @property {string[]} kernelArgs    appended to `console=ttyS0 panic=-1`
 * @property {string[]} [qemuArgs]    extra QEMU args (array: no shell quoting)
 * @property {boolean|number} [edu]  add `-device edu,dma_mask=0xffffffffff` (a number: that many edu devices)
 * @property {number}   [hugepages]   written to /proc/sys/vm/nr_hugepages before the command
 * @property {string[]} [modules]     extra kernel modules to modprobe (must be in INITRAMFS_MODULES)
 * @property {boolean}  [optional]    not booted by default; only with --config NAME
 * @property {number}   [timeoutSeconds] whole boot limit unless PHYSMEM_VM_TIMEOUT is set (default 720)
 * @property {string[]} [sharedGuestTests] further guest test files this boot runs that stay in the
 *                                     other boots too (unlike guestTests, they are not claimed)
 * @property {string[]} [guestTests]  the only guest test files this boot runs (globs relative to
 *                                    test/vm); files claimed by any config run in no config that
 *                                    does not list them, so a boot runs only what needs it
 * @property {object}   expect        handed to the guest tests (JSON)
 */

/**
 * QEMU's NVMe controller on a null block device (reads zeros, drops writes:
 * no image file), for a device the kernel's own driver (nvme) claims.
 */
export const NVME_DEVICE = ['-blockdev', 'null-co,node-name=nvm,size=67108864', '-device', 'nvme,serial=physmem,drive=nvm'];

/** The edu PCI device (docs/specs/edu.rst); 40-bit DMA mask so it can reach all RAM. */
export const EDU_DEVICE = ['-device', 'edu,dma_mask=0xffffffffff'];
export const EDU_PCI_ID = { vendor: 0x1234, device: 0x11e8 };

/** @type {VmConfig[]} */
export const CONFIGS = [
  {
    name: 'mem',
    description: '512 MiB guest booted with mem=384M: 128 MiB of RAM above the limit, unused by the kernel',
    memory: '512M',
    kernelArgs: ['mem=384M'],
    edu: true,
    // A device a kernel driver holds, for physmem/pci's "driver bound" errors.
    qemuArgs: NVME_DEVICE,
    modules: ['nvme'],
    expect: {
      memLimit: MEM_LIMIT_384M,
      firmwareRam: FIRMWARE_RAM_512M_NVME,
      regions: [
        { kind: 'above-mem', start: MEM_LIMIT_384M, end: FIRMWARE_RAM_512M_NVME.end },
      ],
      hugepages: 0,
      edu: true,
      nvme: true,
    },
  },
  {
    name: 'memmap',
    description: 'mem=384M plus memmap=64M$0x08000000: a 64 MiB hole inside kernel RAM, and RAM above mem=; 8 huge pages',
    memory: '512M',
    kernelArgs: ['mem=384M', 'memmap=64M$0x08000000'],
    edu: true,
    hugepages: 8,
    expect: {
      memLimit: MEM_LIMIT_384M,
      firmwareRam: FIRMWARE_RAM_512M,
      regions: [
        { kind: 'memmap-reserved', start: 0x08000000, end: 0x0bffffff },
        { kind: 'above-mem', start: MEM_LIMIT_384M, end: FIRMWARE_RAM_512M.end },
      ],
      hugepages: 8,
      edu: true,
    },
  },
  {
    // Not booted by default (`--config big`): over 1 GiB above mem=, to time
    // how long a devmem pool of that size takes to open.
    name: 'big',
    description: '1.5 GiB guest booted with mem=384M: 1.1 GiB of RAM above the limit',
    optional: true,
    memory: '1536M',
    kernelArgs: ['mem=384M'],
    expect: {
      memLimit: MEM_LIMIT_384M,
      firmwareRam: { start: 0x100000, end: 0x5ffdffff },
      regions: [{ kind: 'above-mem', start: MEM_LIMIT_384M, end: 0x5ffdffff }],
      hugepages: 0,
      edu: false,
    },
  },
  {
    // An emulated Intel IOMMU translating for two edu devices (each alone in
    // an IOMMU group of type DMA-FQ: no iommu=pt), and the vfio modules
    // loaded. Runs only the VFIO guest tests. intremap=on needs the split
    // irqchip; without it VFIO_SET_IOMMU is refused (no interrupt remapping).
    // The intel-iommu device must come before the devices it translates for.
    name: 'iommu',
    description: 'q35 + intel-iommu (TCG, interrupt remapping), two edu devices translated (DMA-FQ) each in its own group and two more sharing a group behind a PCI bridge, vfio-pci loaded, 8 huge pages',
    memory: '512M',
    qemuArgs: [
      '-machine', 'q35,kernel-irqchip=split',
      '-device', 'intel-iommu,intremap=on,caching-mode=on',
      // Two more edus behind a conventional PCI bridge: they share one IOMMU
      // group with it (their requests alias to the bridge), which stages the
      // group-viability error and two devices opened in one group. shpc=off:
      // no hotplug driver binds the bridge.
      '-device', 'pci-bridge,id=pb1,chassis_nr=1,shpc=off',
      '-device', 'edu,bus=pb1,addr=1.0,dma_mask=0xffffffffff',
      '-device', 'edu,bus=pb1,addr=2.0,dma_mask=0xffffffffff',
    ],
    kernelArgs: ['mem=384M', 'intel_iommu=on'],
    edu: 2,
    hugepages: 8,
    modules: ['vfio-pci', 'vfio_iommu_type1', 'uio_pci_generic'],
    guestTests: ['vfio-*.guest.test.ts'],
    // Also here (and still in the other boots): its IOMMU case needs this machine.
    sharedGuestTests: ['lifecycle.guest.test.ts'],
    // Two guest files (pools, devices), each collected by its own vitest
    // worker under TCG: the heaviest boot, give it more than the default.
    timeoutSeconds: 900,
    expect: {
      memLimit: MEM_LIMIT_384M,
      // q35's firmware map ends RAM one page earlier than pc's.
      firmwareRam: { start: 0x100000, end: 0x1ffdefff },
      regions: [{ kind: 'above-mem', start: MEM_LIMIT_384M, end: 0x1ffdefff }],
      hugepages: 8,
      edu: true,
      eduCount: 4,
      iommu: true,
    },
  },
];

/**
 * Modules copied into the initramfs (their dependencies are added
 * automatically). The first group is loaded by /init on every boot, in
 * dependency order; the rest are there for configs' `modules`.
 */
export const BASE_MODULES = ['virtio_pci', '9p', '9pnet_virtio'];
export const INITRAMFS_MODULES = [...BASE_MODULES, 'vfio-pci', 'vfio_iommu_type1', 'uio_pci_generic', 'nvme'];

// Heaviest boots first (by their time limit): with two VMs at a time, the
// longest one then overlaps the others instead of starting last.
export const DEFAULT_CONFIGS = CONFIGS.filter((c) => !c.optional)
  .sort((a, b) => (b.timeoutSeconds ?? 0) - (a.timeoutSeconds ?? 0))
  .map((c) => c.name);

/** Globs of guest test files that some config claims (they run only there). */
export const CLAIMED_GUEST_TESTS = [...new Set(CONFIGS.flatMap((c) => c.guestTests ?? []))];

/**
 * Which guest test files a boot of `config` runs: `include` and `exclude`
 * globs relative to test/vm (for test/vm/vitest.guest.config.mjs).
 */
export function guestTestSelection(config) {
  if (config.guestTests) return { include: [...config.guestTests, ...(config.sharedGuestTests ?? [])], exclude: [] };
  return { include: ['**/*.guest.test.ts'], exclude: CLAIMED_GUEST_TESTS };
}

export function getConfig(name) {
  const c = CONFIGS.find((x) => x.name === name);
  if (!c) throw new Error(`unknown VM config "${name}" (known: ${CONFIGS.map((x) => x.name).join(', ')})`);
  return c;
}
