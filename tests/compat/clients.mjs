// Drives the real, unmodified @segment/analytics-node and @umami/node against
// a running clickflow (started by tests/integration/test_compat.py), then
// prints one JSON line: what each client reported. The Python side checks
// what the server counted.
//
//   node clients.mjs http://127.0.0.1:PORT SITE_KEY [traits]
//
// With `traits`: identify then track for one user with each SDK (the
// user_traits join of SPEC 15, tests/integration/test_compat_clients.py).
import { Analytics } from '@segment/analytics-node';
import { Umami } from '@umami/node';

const [host, siteKey, mode] = process.argv.slice(2);
if (!host || !siteKey) {
  console.error('usage: node clients.mjs URL SITE_KEY [traits]');
  process.exit(2);
}
const out = { segment: {}, umami: {} };

if (mode === 'traits') {
  const errs = [];
  const a = new Analytics({ writeKey: siteKey, host, flushAt: 20, flushInterval: 60000 });
  a.on('error', (e) => errs.push(String(e && (e.reason || e.message || e))));
  // One batch: the identify is before the track in it.
  a.identify({ userId: 'seg-t1', traits: { plan: 'enterprise', email: 't1@shop.example' } });
  a.track({ userId: 'seg-t1', event: 'Bought', properties: { url: 'https://shop.example/traits/buy' } });
  await a.closeAndFlush();
  // Umami's identify has no user id: the server derives the visitor's,
  // the same as for the track after it (same site, address, user agent).
  const u = new Umami({ websiteId: siteKey, hostUrl: host });
  const i1 = await u.identify({ plan: 'team' });
  const t1 = await u.track({ url: '/traits/umami', hostname: 'shop.example' });
  console.log(JSON.stringify({ segment: { errors: errs }, umami: { statuses: [i1.status, t1.status] } }));
  process.exit(0);
}

// A lost acknowledgement: the first request reaches the server and is
// accepted, but the client sees a network error (as when a connection drops
// after the server answered), so the SDK sends the same batch again with the
// same messageIds. analytics-node's documented `httpClient` option is how
// the failure is injected; the SDK's retry logic is untouched.
let requests = 0;
const statuses = [];
const lossyClient = {
  async makeRequest(opts) {
    requests++;
    const res = await fetch(opts.url, { method: opts.method, headers: opts.headers, body: opts.body });
    statuses.push(res.status);
    if (requests === 1)
      throw new Error('connection reset after the server answered (injected)');
    return res;
  },
};

const errors = [];
const seg = new Analytics({
  writeKey: siteKey, host, flushAt: 20, flushInterval: 60000, maxRetries: 3, httpClient: lossyClient,
});
seg.on('error', (e) => errors.push(String(e && (e.reason || e.message || e))));

// First batch: track, page, screen, identify (flushed together; its first
// delivery is "lost" and retried).
seg.track({
  userId: 'seg-u1', event: 'Signed Up', messageId: 'seg-m1',
  properties: { plan: 'pro', url: 'https://shop.example/seg/pricing?utm_source=news' },
  context: { userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0', campaign: { source: 'news' } },
});
seg.page({
  anonymousId: 'seg-anon-7', name: 'Home', messageId: 'seg-m2',
  context: { page: { url: 'https://shop.example/seg/home', path: '/seg/home', referrer: 'https://r.example/' } },
});
seg.screen({ userId: 'seg-u2', name: 'Settings', messageId: 'seg-m3' });
seg.identify({ userId: 'seg-u1', traits: { email: 'a@b.example' } });
await seg.flush();

// Second batch: a new event, and the same messageId as before sent again by
// the application (an at-least-once producer): counted once.
seg.track({ userId: 'seg-u1', event: 'Clicked', messageId: 'seg-m4', properties: { url: '/seg/pricing' } });
seg.track({ userId: 'seg-u1', event: 'Signed Up', messageId: 'seg-m1', properties: { url: '/seg/pricing' } });
await seg.closeAndFlush();
out.segment = { requests, statuses, errors };

const umami = new Umami({ websiteId: siteKey, hostUrl: host });
const r1 = await umami.track({ url: '/umami/home?utm_source=x', referrer: 'https://ref.example/', hostname: 'shop.example' });
const r2 = await umami.track('signup', { plan: 'pro' });
const r3 = await umami.identify({ email: 'a@b.example' });
out.umami = { statuses: [r1.status, r2.status, r3.status] };

console.log(JSON.stringify(out));
