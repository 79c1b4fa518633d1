import { hex } from '../internal/validate.js';
/**
 * Interval arithmetic on physical address ranges (internal). Spans are
 * half-open `[start, end)` so that empty and adjacent ranges are easy; the
 * kernel's files use inclusive ends, converted at the edges.
 * @module
 */

/** Half-open range of physical addresses `[start, end)`. */
export interface Span {
  start: bigint;
  end: bigint;
}

/** One past the highest 64-bit address. */
export const ADDRESS_END = 1n << 64n;

/** A span as the kernel prints ranges: `0x18000000-0x1ffdffff` (inclusive end). */
export function spanText(s: Span): string {
  return `${hex(s.start)}-${hex(s.end - 1n)}`;
}

/** A span from a kernel range with an inclusive end. */
export function spanOf(r: { start: bigint; end: bigint }): Span {
  return { start: r.start, end: r.end + 1n };
}

/** Sorted, non-overlapping, non-adjacent, non-empty spans covering the same addresses. */
export function normalize(spans: readonly Span[]): Span[] {
  const s = spans.filter((x) => x.end > x.start).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: Span[] = [];
  for (const x of s) {
    const last = out[out.length - 1];
    if (last && x.start <= last.end) {
      if (x.end > last.end) last.end = x.end;
    } else {
      out.push({ start: x.start, end: x.end });
    }
  }
  return out;
}

/** Addresses in `a` and in `b`. */
export function intersect(a: readonly Span[], b: readonly Span[]): Span[] {
  const out: Span[] = [];
  for (const x of normalize(a)) {
    for (const y of normalize(b)) {
      const start = x.start > y.start ? x.start : y.start;
      const end = x.end < y.end ? x.end : y.end;
      if (end > start) out.push({ start, end });
    }
  }
  return normalize(out);
}

/** Addresses in `a` but not in `b`. */
export function subtract(a: readonly Span[], b: readonly Span[]): Span[] {
  let cur = normalize(a);
  for (const y of normalize(b)) {
    const next: Span[] = [];
    for (const x of cur) {
      if (y.end <= x.start || y.start >= x.end) {
        next.push(x);
        continue;
      }
      if (y.start > x.start) next.push({ start: x.start, end: y.start });
      if (y.end < x.end) next.push({ start: y.end, end: x.end });
    }
    cur = next;
  }
  return cur;
}

/** True when the spans share an address. */
export function overlaps(a: Span, b: Span): boolean {
  return a.start < b.end && b.start < a.end;
}

/** True when `inner` lies entirely inside `outer`. */
export function contains(outer: Span, inner: Span): boolean {
  return inner.start >= outer.start && inner.end <= outer.end;
}

/** Total bytes of normalized spans. */
export function total(spans: readonly Span[]): bigint {
  return normalize(spans).reduce((s, x) => s + (x.end - x.start), 0n);
}

/** Round down to a multiple of `a` (a power of two). */
export function alignDown(x: bigint, a: bigint): bigint {
  return x - (x % a);
}

/** Round up to a multiple of `a`. */
export function alignUp(x: bigint, a: bigint): bigint {
  return alignDown(x + a - 1n, a);
}
