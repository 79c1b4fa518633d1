import { describe, expect, it } from 'vitest';
import { PhysmemError, codeOfErrno, fromErrno, hasCode, invalidArgument } from '../lib/errors.js';

describe('PhysmemError', () => {
  it('is a real Error subclass with fs-style fields', () => {
    const e = fromErrno(13, 'open', '/dev/mem', 'run as root');
    expect(e).toBeInstanceOf(Error);
    expect(e).toBeInstanceOf(PhysmemError);
    expect(e.name).toBe('PhysmemError');
    expect(e).toMatchObject({ code: 'EACCES', errno: -13, syscall: 'open', path: '/dev/mem' });
    expect(e.message).toBe("EACCES: permission denied, open '/dev/mem'. run as root");
    expect(e.stack).toContain('PhysmemError');
  });

  it('a detail that ends its own sentence gets no second stop before the hint', () => {
    expect(invalidArgument("unknown option 'x'; did you mean 'y'?", 'Use y.').message).toBe("EINVAL: unknown option 'x'; did you mean 'y'? Use y.");
    expect(invalidArgument('bad size', 'Use 4096.').message).toBe('EINVAL: bad size. Use 4096.');
  });

  it('maps errno numbers both signs, and unknown ones', () => {
    expect(codeOfErrno(1)).toBe('EPERM');
    expect(codeOfErrno(-22)).toBe('EINVAL');
    expect(codeOfErrno(99999)).toBe('UNKNOWN');
  });

  it('builds argument errors without syscall or path', () => {
    const e = invalidArgument('size must be > 0', 'pass a positive integer');
    expect(e).toMatchObject({ code: 'EINVAL', errno: -22 });
    expect(e.syscall).toBeUndefined();
    expect(e.message).toBe('EINVAL: size must be > 0. pass a positive integer');
    expect(hasCode(e, 'EINVAL')).toBe(true);
    expect(hasCode(new Error('x'), 'EINVAL')).toBe(false);
  });
});
