/**
 * Electron refuses external ArrayBuffers (its V8 memory cage). No Electron
 * here, so a fake addon stands in: the real one with arrayBuffer() failing as
 * native/physmem.cc does when napi_create_external_arraybuffer is refused.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { throwsWith } from './helpers/errors.js';
import { native, setNativeAddonForTesting, type NativeAddon } from '../lib/native.js';
import { openPoolSync } from '../lib/index.js';

afterEach(() => setNativeAddonForTesting(undefined));

function electronLike(): { addon: NativeAddon; mapped: Set<number> } {
  const real = native();
  const mapped = new Set<number>();
  const addon: NativeAddon = {
    ...real,
    mmap: (...a) => {
      const h = real.mmap(...a);
      mapped.add(h);
      return h;
    },
    munmap: (h) => {
      real.munmap(h);
      mapped.delete(h);
    },
    arrayBuffer: () => {
      const e = new Error('ENOTSUP: this runtime refuses external ArrayBuffers (V8 sandbox?)') as Error & { code: string };
      e.code = 'ENOTSUP';
      throw e;
    },
  };
  return { addon, mapped };
}

describe('a runtime without external ArrayBuffers (fake addon standing in for Electron)', () => {
  it('fails at pool open with ENOTSUP naming the runtime and what to do, and unmaps what it opened', () => {
    const { addon, mapped } = electronLike();
    setNativeAddonForTesting(addon);
    const msg = throwsWith(() => openPoolSync({ backend: 'fake', size: 1 << 20 }), 'ENOTSUP').message;
    expect(msg).toContain(`this runtime (node ${process.version}) does not allow external ArrayBuffers`);
    expect(msg).toContain('Node.js >= 20 and Bun');
    expect(mapped.size).toBe(0); // the backend was closed, its mapping gone
  });

  it("the same at open for 'auto' (its fake fallback), before any alloc", () => {
    setNativeAddonForTesting(electronLike().addon);
    expect(() => openPoolSync({ backend: 'auto', quiet: true, size: 1 << 20 })).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
  });

  it('with the real addon the probe leaves nothing behind: a fresh pool has no attached ArrayBuffer', () => {
    const real = native();
    let handle = 0;
    setNativeAddonForTesting({ ...real, mmap: (...a) => (handle = real.mmap(...a)) });
    const pool = openPoolSync({ backend: 'fake', size: 1 << 20 });
    expect(handle).not.toBe(0);
    expect(real.attachedCount(handle)).toBe(0);
    pool.close();
  });
});
