// The README's example: allocate DMA memory, fill it, hand the bus address to a device.
// In your own project: import { openPoolSync, PhysmemError } from 'physmem';
import { openPoolSync, PhysmemError } from '../lib/index.js';

const pool = openPoolSync({ backend: 'auto' }); // devmem when RAM is reserved, else the fake backend (with a warning)
try {
  const ring = pool.alloc(4096, { align: 4096 }); // a descriptor ring: one page, page-aligned
  const packet = pool.alloc(1536, { boundary: 4096 }); // a packet buffer that must not cross a page
  packet.bytes.set(new TextEncoder().encode('hello, device'));
  const view = new DataView(ring.bytes.buffer);
  view.setBigUint64(0, packet.bus, true); // descriptor 0: buffer address...
  view.setUint32(8, packet.size, true); // ...and length
  console.log(`ring at bus 0x${ring.bus.toString(16)}, packet at 0x${packet.bus.toString(16)}`);
  // program ring.bus into the device's DMA engine here (see physmem/pci, examples/edu)
  packet.free();
  ring.free();
} catch (e) {
  if (e instanceof PhysmemError && e.code === 'ENOMEM') console.error('pool too small:', e.message);
  else throw e;
} finally {
  pool.close(); // frees what is left and detaches every buffer
}
