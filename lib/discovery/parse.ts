/**
 * Pure parsers for the three files discovery reads: the firmware's map
 * (/sys/firmware/memmap), /proc/iomem and /proc/cmdline. They take the
 * files' contents, so they run (and are tested) anywhere.
 *
 * parseCmdline follows the x86 kernel's own parsing (memparse,
 * parse_memmap_one, parse_memopt in arch/x86/kernel/e820.c), mistakes
 * included: what matters is what the kernel did, not what was meant.
 * @module
 */
import { invalidArgument } from '../errors.js';
import type { FirmwareRange, IomemEntry, MemOption, ParsedCmdline, ParsedIomem, RawFirmwareEntry } from './types.js';
import { hex } from '../internal/validate.js';

const U64_MASK = (1n << 64n) - 1n;

function parseHex(s: string, what: string): bigint {
  const t = s.trim();
  if (!/^(0x)?[0-9a-f]+$/i.test(t)) throw invalidArgument(`${what} must be a hex number such as 0x1ffdffff, got ${JSON.stringify(s)}`);
  return BigInt(t.startsWith('0x') || t.startsWith('0X') ? t : '0x' + t);
}

/**
 * Parse the entries of /sys/firmware/memmap (directories 0..N, each with
 * files `start`, `end`, `type`).
 *
 * @param entries - the three files' contents per directory, in any order.
 * @returns the entries sorted by address; `end` is inclusive as in the files.
 * @throws {PhysmemError} EINVAL when a start or end is not hex, or end < start.
 */
export function parseFirmwareMemmap(entries: readonly RawFirmwareEntry[]): FirmwareRange[] {
  const out = entries.map((e, i) => {
    const start = parseHex(e.start, `firmware memmap entry ${i} start`);
    const end = parseHex(e.end, `firmware memmap entry ${i} end`);
    if (end < start) throw invalidArgument(`firmware memmap entry ${i} ends (${e.end.trim()}) before it starts (${e.start.trim()})`);
    return { start, end, size: end - start + 1n, type: e.type.trim() };
  });
  return out.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
}

const IOMEM_LINE = /^( *)([0-9a-f]+)-([0-9a-f]+) :(?: (.*))?$/i;

/**
 * Parse /proc/iomem: `start-end : name` lines (inclusive hex, no `0x`),
 * nested entries indented by two spaces per level.
 *
 * @param text - the file's contents.
 * @returns the tree (`entries`), every entry in file order (`flat`), and
 *   `hidden: true` when all addresses are zero (read without CAP_SYS_ADMIN).
 *   Lines that do not parse are listed in `malformed` and skipped.
 */
export function parseIomem(text: string): ParsedIomem {
  const entries: IomemEntry[] = [];
  const flat: IomemEntry[] = [];
  const malformed: string[] = [];
  const stack: IomemEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\s+$/, '');
    if (line === '') continue;
    const m = IOMEM_LINE.exec(line);
    if (!m) {
      malformed.push(line);
      continue;
    }
    const entry: IomemEntry = {
      start: BigInt('0x' + m[2]),
      end: BigInt('0x' + m[3]),
      name: m[4] ?? '',
      depth: Math.floor(m[1].length / 2),
      children: [],
    };
    while (stack.length > 0 && stack[stack.length - 1].depth >= entry.depth) stack.pop();
    const parent = stack[stack.length - 1];
    if (parent) parent.children.push(entry);
    else {
      entry.depth = 0; // an indented line with no parent: treat it as top-level rather than lose it
      entries.push(entry);
    }
    stack.push(entry);
    flat.push(entry);
  }
  const hidden = flat.length > 0 && flat.every((e) => e.start === 0n && e.end === 0n);
  return { entries, flat, hidden, malformed };
}

// simple_strtoull(s, &end, 0): 0x.. is hex, a leading 0 is octal, else decimal.
function strtoull(s: string, i: number): { value: bigint; end: number } {
  let base = 10;
  if (s[i] === '0') {
    if ((s[i + 1] === 'x' || s[i + 1] === 'X') && /[0-9a-f]/i.test(s[i + 2] ?? '')) {
      base = 16;
      i += 2;
    } else base = 8;
  }
  let value = 0n;
  let j = i;
  for (; j < s.length; j++) {
    const d = parseInt(s[j], 16);
    if (Number.isNaN(d) || d >= base) break;
    value = (value * BigInt(base) + BigInt(d)) & U64_MASK;
  }
  return { value, end: j };
}

const SUFFIX_SHIFT: Readonly<Record<string, bigint>> = { k: 10n, m: 20n, g: 30n, t: 40n, p: 50n, e: 60n };

/** The kernel's memparse(): a number (base as strtoull) and an optional K/M/G/T/P/E suffix. */
function memparse(s: string, i: number): { value: bigint; end: number } {
  const r = strtoull(s, i);
  const shift = SUFFIX_SHIFT[(s[r.end] ?? '').toLowerCase()];
  if (shift !== undefined) return { value: (r.value << shift) & U64_MASK, end: r.end + 1 };
  return r;
}

/** `0x4000000n` -> `'64M'`: the largest K/M/G/T suffix that divides exactly. */
export function formatMemSize(n: bigint): string {
  for (const [suffix, shift] of [['T', 40n], ['G', 30n], ['M', 20n], ['K', 10n]] as const) {
    if (n > 0n && n % (1n << shift) === 0n) return `${n >> shift}${suffix}`;
  }
  return n.toString();
}

/** Tokens of a command line as the kernel's next_arg() splits them; stops at `--` (the rest is for init). */
function cmdlineParams(text: string): { param: string; val: string | undefined }[] {
  const out: { param: string; val: string | undefined }[] = [];
  let i = 0;
  while (i < text.length) {
    while (i < text.length && /\s/.test(text[i])) i++;
    if (i >= text.length) break;
    let inQuote = false;
    const begin = i;
    for (; i < text.length; i++) {
      if (/\s/.test(text[i]) && !inQuote) break;
      if (text[i] === '"') inQuote = !inQuote;
    }
    let tok = text.slice(begin, i);
    const quoted = tok.startsWith('"');
    if (quoted) tok = tok.slice(1);
    const eq = tok.indexOf('=');
    let param = eq < 0 ? tok : tok.slice(0, eq);
    let val = eq < 0 ? undefined : tok.slice(eq + 1);
    if (val !== undefined && val.startsWith('"')) {
      val = val.slice(1);
      if (val.endsWith('"')) val = val.slice(0, -1);
    } else if (quoted) {
      if (val !== undefined && val.endsWith('"')) val = val.slice(0, -1);
      else if (val === undefined && param.endsWith('"')) param = param.slice(0, -1);
    }
    if (val === undefined && param === '--') break;
    out.push({ param, val });
  }
  return out;
}

const KIND_BY_CHAR: Readonly<Record<string, MemOption['kind']>> = { '@': 'ram', '#': 'acpi', $: 'reserved', '!': 'persistent' };

/** One memmap= item, as parse_memmap_one() reads it. */
function parseMemmapItem(item: string, problems: string[]): MemOption | undefined {
  const text = `memmap=${item}`;
  if (item.startsWith('exactmap')) return { text, param: 'memmap', kind: 'exactmap' };
  const size = memparse(item, 0);
  if (size.end === 0) {
    problems.push(`${text}: not a size; the kernel ignores it`);
    return undefined;
  }
  const octal = (from: number) => /^0[0-9]/.test(item.slice(from));
  if (octal(0)) problems.push(`${text}: a number with a leading 0 is octal to the kernel (${item.slice(0, size.end)} = ${size.value} bytes); use 0x for hex`);
  const c = item[size.end] ?? '';
  const kind = KIND_BY_CHAR[c];
  if (kind) {
    const start = memparse(item, size.end + 1);
    if (start.end === size.end + 1) {
      problems.push(`${text}: no start address after '${c}': the kernel uses 0`);
    } else if (octal(size.end + 1)) {
      problems.push(`${text}: the start has a leading 0, which is octal to the kernel (read as ${hex(start.value)}); use 0x for hex`);
    }
    if (start.end < item.length) {
      problems.push(`${text}: the kernel stops reading at ${JSON.stringify(item.slice(start.end))} (it still applies ${formatMemSize(size.value)}${c}${hex(start.value)})`);
    }
    return { text, param: 'memmap', kind, size: size.value, start: start.value };
  }
  if (c === '%') {
    const start = memparse(item, size.end + 1);
    let p = start.end;
    let fromType = 0;
    let toType = 0;
    if (item[p] === '-') {
      const r = strtoull(item, p + 1);
      fromType = Number(r.value);
      p = r.end;
    }
    if (item[p] === '+') {
      const r = strtoull(item, p + 1);
      toType = Number(r.value);
      p = r.end;
    }
    const option: MemOption = { text, param: 'memmap', kind: 'convert', size: size.value, start: start.value, fromType, toType };
    if (p < item.length) {
      option.ignored = `the kernel rejects it: unexpected ${JSON.stringify(item.slice(p))}`;
      problems.push(`${text}: ${option.ignored}`);
    }
    return option;
  }
  // No @#$!%: the kernel reads memmap=nn as mem=nn, whatever follows.
  if (c !== '') {
    const rest = item.slice(size.end);
    let why: string;
    if (rest.startsWith('\\')) {
      why = `a backslash reached the kernel before '${rest[1] ?? ''}': the boot loader's escaping of '$' is wrong`;
    } else if (/^x[0-9a-f]+$/i.test(rest)) {
      why = `GRUB seems to have expanded '$0' away: in grub.cfg '$' must be written '\\$'`;
    } else {
      why = `${JSON.stringify(rest)} is not @, #, $, ! or %`;
    }
    problems.push(`${text}: the kernel read this as memmap=${formatMemSize(size.value)}, an address limit like mem=${formatMemSize(size.value)} (${why}); nothing was reserved and RAM above ${hex(size.value)} is not used`);
  }
  return { text, param: 'memmap', kind: 'limit', size: size.value };
}

/**
 * Parse the memory options of a kernel command line (/proc/cmdline) the way
 * the x86 kernel reads them: `mem=nn[KMGTPE]`, and `memmap=` items
 * (comma-separated lists too): `exactmap`, `nn@ss`, `nn#ss`, `nn$ss`,
 * `nn!ss`, `nn%ss-old+new`, and a bare `nn` (a limit, like mem=).
 * Numbers are decimal, `0x` hex or (leading 0) octal, as in the kernel.
 * Parsing stops at `--`. Entries before a later `memmap=exactmap` are
 * marked `ignored`.
 *
 * @param text - the command line.
 * @returns the options in order, the effective limit, exactmap, and
 *   `problems` for entries the kernel reads differently from what was
 *   probably meant (e.g. `memmap=64M\$0x08000000`, which the kernel takes
 *   as mem=64M).
 */
export function parseCmdline(text: string): ParsedCmdline {
  const raw = text.trim();
  const options: MemOption[] = [];
  const problems: string[] = [];
  for (const { param, val } of cmdlineParams(raw)) {
    if (param === 'mem') {
      if (val === undefined || val === 'nopentium') continue; // nopentium: 32-bit only, no limit
      const r = memparse(val, 0);
      const option: MemOption = { text: `mem=${val}`, param: 'mem', kind: 'limit', size: r.value };
      if (r.value === 0n) {
        option.ignored = 'mem=0 (or not a number) is ignored by the kernel';
        problems.push(`mem=${val}: ${option.ignored}`);
      }
      options.push(option);
    } else if (param === 'memmap' && val !== undefined) {
      for (const item of val.split(',')) {
        const o = parseMemmapItem(item, problems);
        if (o) options.push(o);
      }
    }
  }
  // memmap=exactmap empties the kernel's map: whatever came before it is gone.
  let lastExact = -1;
  options.forEach((o, i) => {
    if (o.kind === 'exactmap') lastExact = i;
  });
  for (let i = 0; i < lastExact; i++) options[i].ignored ??= 'a later memmap=exactmap discards it';
  let memLimit: bigint | undefined;
  let memLimitOption: string | undefined;
  for (const o of options) {
    if (o.kind === 'limit' && !o.ignored && o.size !== undefined && (memLimit === undefined || o.size < memLimit)) {
      memLimit = o.size;
      memLimitOption = o.text;
    }
  }
  const result: ParsedCmdline = { raw, options, exactmap: lastExact >= 0, problems };
  if (memLimit !== undefined) {
    result.memLimit = memLimit;
    result.memLimitOption = memLimitOption;
  }
  return result;
}
