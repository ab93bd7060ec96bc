// Small network helpers shared by the simulators and tests.
import { createServer } from 'node:net';

/** A TCP port that was free a moment ago on `host` (for libraries that cannot listen on 0). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
