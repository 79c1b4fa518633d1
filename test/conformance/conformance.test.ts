import { openPoolSync } from '../../lib/index.js';
import { conformanceSuite } from './suite.js';

// The fake backend stands in for real memory on the host; the real backends
// run this same suite inside the QEMU guest (test/vm).
conformanceSuite('fake backend (memfd, synthetic physical base)', () => openPoolSync({ backend: 'fake', size: 8 << 20 }));
conformanceSuite('fake backend with a bus offset and a base below 4 GiB', () =>
  openPoolSync({ backend: 'fake', size: 4 << 20, physBase: 0x4000_0000n, busOffset: 0x8000_0000n }),
);
