// What every browser test shares: playwright-core's chromium (Debian's
// binary, no browser download), free loopback ports, and waiting for a
// condition with a deadline instead of sleeping.
import { createServer } from 'node:net';

export async function loadChromium() {
  try {
    return (await import('playwright-core')).chromium;
  } catch (e) {
    console.error('playwright-core is missing: run `npm ci` in tests/browser (deploy/install-deps.sh --test does it)');
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

export async function until(what, fn, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error('timed out waiting for ' + what + (last ? ': ' + last.message : ''));
    await new Promise((r) => setTimeout(r, 25));   // polling a condition
  }
}
