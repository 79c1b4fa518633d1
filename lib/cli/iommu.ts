/**
 * The IOMMU part of `physmem stat` and `physmem regions`: whether an IOMMU
 * translates DMA here, and so which backends' bus addresses a device can use.
 * @module
 */
import { iommuState, type IommuState } from '../pci/sysfs.js';

/** What `stat` and `regions` print about the IOMMU (JSON field `iommu`). */
export interface IommuReport extends IommuState {
  /** Backends whose bus addresses devices outside VFIO can use: `'vfio'` when the IOMMU translates, else the physical-address ones. */
  readonly fits: 'vfio' | 'physical';
  /** One sentence saying so. */
  readonly advice: string;
}

/**
 * Read the IOMMU state under `sysfsRoot` and say which backend fits.
 * @param sysfsRoot - default '/sys'.
 */
export function iommuReport(sysfsRoot = '/sys'): IommuReport {
  const s = iommuState(sysfsRoot);
  const types = Object.entries(s.types)
    .map(([t, n]) => `${n} ${t}`)
    .join(', ');
  if (!s.enabled) {
    return { ...s, fits: 'physical', advice: 'no IOMMU groups: devices use physical addresses; the devmem, hugepage and udmabuf backends fit' };
  }
  if (s.translating) {
    return {
      ...s,
      fits: 'vfio',
      advice:
        `the IOMMU translates DMA (${s.groups} groups: ${types}): devices see I/O virtual addresses, so physical-address pools (devmem, hugepage, udmabuf) are wrong for them ` +
        '(physmem/pci refuses setBusMaster there); use physmem/vfio and the vfio backend, or boot with iommu=pt',
    };
  }
  return { ...s, fits: 'physical', advice: `the IOMMU is on but does not translate (${s.groups} groups: ${types}): devices use physical addresses; devmem, hugepage and udmabuf fit, and so does vfio` };
}

/** The text lines of {@link iommuReport}. */
export function iommuLines(r: IommuReport): string[] {
  const units = r.units.length ? ` (${r.units.join(', ')})` : '';
  return [`IOMMU: ${r.enabled ? (r.translating ? 'on, translating' : 'on, not translating') + units : 'none'}`, `  ${r.advice}`];
}
