import { afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPoolSync } from '../../lib/index.js';
import { startServer, type ServiceServer } from '../../lib/service/server.js';
import { ServicePool } from '../../lib/service/client.js';
import { conformanceSuite } from './suite.js';

// The fake backend stands in for real memory on the host; the real backends
// run this same suite inside the QEMU guest (test/vm).
conformanceSuite('fake backend (memfd, synthetic physical base)', () => openPoolSync({ backend: 'fake', size: 8 << 20 }));
conformanceSuite('fake backend with a bus offset and a base below 4 GiB', () =>
  openPoolSync({ backend: 'fake', size: 4 << 20, physBase: 0x4000_0000n, busOffset: 0x8000_0000n }),
);

// A pool served by a daemon is held to the same contract: a fresh daemon (fake memory file) per test.
const root = mkdtempSync(join(tmpdir(), 'physmem-conformance-'));
const servers: ServiceServer[] = [];
afterAll(async () => {
  for (const s of servers) await s.close();
  rmSync(root, { recursive: true, force: true });
});
conformanceSuite('pool served by a daemon (openPool({ service }), fake memory file)', async () => {
  const socket = join(mkdtempSync(join(root, 'd-')), 'run', 'pool.sock');
  servers.push(await startServer({ socket, size: 8 << 20, log: () => undefined }));
  return ServicePool.connect(socket);
}, { linked: false });
