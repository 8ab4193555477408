// Browser test of the web tracker (GET /cf.js, SPEC 15): a page of another
// origin (a small node HTTP server on a free loopback port) loads the script
// from the real clickflow binary, as a customer's site would, in Debian's
// headless Chromium driven by playwright-core. Checks that a pageview, a
// pushState navigation, a popstate navigation, a clickflow() custom event
// with props, a data-cf-event click and an outbound link each reach
// POST /api/v1/events with the right fields, that the server answers each,
// and that its counters saw every one; and that events sent as a page is
// hidden (visibilitychange, pagehide) go by sendBeacon and arrive once.
// Prints "N passed, M failed".
//
//   CLICKFLOW_BIN=build/server/clickflow node tests/browser/tracker.test.mjs
//
// The outbound link points at http://outbound.test/, which the test answers
// itself (page.route): no traffic leaves the machine. Waits are for
// conditions with deadlines, never sleeps.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { freePort, loadChromium, runTests, startClickflow, until } from './common.mjs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const BIN = process.env.CLICKFLOW_BIN || join(repo, 'build', 'server', 'clickflow');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const chromium = await loadChromium();

/* ---- the clickflow server ------------------------------------------------ */

const dir = mkdtempSync(join(tmpdir(), 'clickflow-tracker-'));
const httpPort = await freePort();
let wsPort;
do wsPort = await freePort(); while (wsPort === httpPort);
// The customer's site (below) gets its port now: its origin is the site
// key's, so the server accepts the tracker's events and stores them.
let sitePort;
do sitePort = await freePort(); while (sitePort === httpPort || sitePort === wsPort);
const { proc, base, exited, serverLog } = await startClickflow(BIN, dir, httpPort, [
  '--bind', '127.0.0.1', '--http-port', String(httpPort), '--ws-port', String(wsPort),
  '--idle-timeout', '0', '--data-dir', join(dir, 'data'),
  '--site', `test-site=http://localhost:${sitePort}`,
]);

async function stats() {
  const r = await fetch(base + '/api/v1/stats');
  assert.equal(r.status, 200);
  return r.json();
}

/* ---- the customer's site: another origin -------------------------------- */

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<script>window.clickflow = function () { (clickflow.q = clickflow.q || []).push(arguments); };
clickflow('early', {queued: true});</script>
<script defer src="${base}/cf.js" data-site="test-site"></script></head>
<body><h1>shop</h1>
<button id="buy" data-cf-event="buy_click" data-cf-prop-plan="pro"><span id="buy-label">Buy</span></button>
<a id="internal" href="#reviews">reviews</a>
<a id="out" href="http://outbound.test/landing">partner</a>
</body></html>`;
const site = createHttpServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
  res.end(PAGE);
});
await new Promise((res, rej) => { site.on('error', rej); site.listen(sitePort, '127.0.0.1', res); });
// "localhost" is another origin than the server's 127.0.0.1 (and the same
// loopback address space, so Chromium's private-network rules stay quiet).
const siteBase = `http://localhost:${sitePort}`;

/* ---- the browser ---------------------------------------------------------- */

const profile = mkdtempSync(join(tmpdir(), 'clickflow-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
await context.route('http://outbound.test/**', (route) =>
  route.fulfill({ status: 200, contentType: 'text/html', body: '<title>landed</title>landed' }));
const page = context.pages()[0] || await context.newPage();
const consoleErrors = [];
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push('pageerror: ' + e.message));

// Every request the tracker makes, as the server receives it, and the
// server's answer to it.
const sent = [];
context.on('request', (r) => {
  if (r.url() !== base + '/api/v1/events') return;
  const entry = { method: r.method(), type: r.headers()['content-type'], body: JSON.parse(r.postData()), status: null,
    resourceType: r.resourceType() };
  sent.push(entry);
  r.response().then((resp) => { entry.status = resp ? resp.status() : 'none'; }, () => { entry.status = 'failed'; });
});
const names = () => sent.map((e) => e.body.name);
async function nth(i, what) {
  await until(what, () => sent.length > i, 5000);
  return sent[i].body;
}

const tests = [];
const test = (name, fn) => tests.push({ name, fn });
const before = await stats();

test('a pageview on load, and queued calls made before the script ran', async () => {
  await page.goto(siteBase + '/', { referer: 'https://news.example/story' });
  const first = await nth(0, 'the first event');
  const second = await nth(1, 'the second event');
  const byName = { [first.name]: first, [second.name]: second };
  const pv = byName.pageview;
  assert.ok(pv, JSON.stringify(sent));
  assert.equal(pv.page_url, siteBase + '/');
  assert.equal(pv.site, 'test-site');
  assert.match(pv.referrer, /^https:\/\/news\.example\//);
  assert.equal(pv.user_id, undefined);          // the server derives it (SPEC 15)
  assert.deepEqual(byName.early.properties, { queued: true });
  // Sent as the tracker promises: a POST of text/plain (sendBeacon).
  assert.equal(sent[0].method, 'POST');
  assert.match(sent[0].type, /^text\/plain/);
  assert.equal(await page.evaluate(() => document.cookie), '');
  assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length), 0);
});

test('pushState navigation is a pageview; replaceState of the same URL and hash changes are not', async () => {
  await page.evaluate(() => history.pushState({}, '', '/products/7?utm_source=news'));
  const pv = await nth(2, 'the pushState pageview');
  assert.equal(pv.name, 'pageview');
  assert.equal(pv.page_url, siteBase + '/products/7?utm_source=news');
  await page.evaluate(() => history.replaceState({ x: 1 }, '', '/products/7?utm_source=news'));
  await page.click('#internal');              // #reviews: same page
  await page.evaluate(() => history.pushState({}, '', '/cart'));
  const cart = await nth(3, 'the /cart pageview');
  assert.equal(cart.page_url, siteBase + '/cart');
  assert.deepEqual(names(), [sent[0].body.name, sent[1].body.name, 'pageview', 'pageview']);
});

test('popstate (back) is a pageview', async () => {
  await page.goBack();
  const pv = await nth(4, 'the popstate pageview');
  assert.equal(pv.name, 'pageview');
  assert.match(pv.page_url, /\/products\/7\?utm_source=news(#reviews)?$/);
});

test('clickflow(name, props) sends a custom event', async () => {
  await page.evaluate(() => window.clickflow('signup', { plan: 'pro', seats: 3 }));
  const ev = await nth(5, 'the custom event');
  assert.equal(ev.name, 'signup');
  assert.deepEqual(ev.properties, { plan: 'pro', seats: 3 });
  assert.equal(ev.site, 'test-site');
});

test('a click inside an element with data-cf-event sends that event with its data-cf-prop-*', async () => {
  await page.click('#buy-label');
  const ev = await nth(6, 'the data-cf-event click');
  assert.equal(ev.name, 'buy_click');
  assert.deepEqual(ev.properties, { plan: 'pro' });
});

test('an outbound link click is sent, and the navigation still happens', async () => {
  await Promise.all([page.waitForURL('http://outbound.test/landing'), page.click('#out')]);
  const ev = await nth(7, 'the outbound event');
  assert.equal(ev.name, 'outbound');
  assert.deepEqual(ev.properties, { url: 'http://outbound.test/landing' });
  assert.match(ev.page_url, /\/products\/7/);
});

test('the server answered every request and counted every event', async () => {
  assert.equal(sent.length, 8, JSON.stringify(names()));
  // The outbound beacon outlives its page, so the browser reports no answer
  // for it; the others were answered 202.
  await until('every answer', () => sent.slice(0, 7).every((e) => e.status !== null), 5000);
  assert.deepEqual(sent.slice(0, 7).map((e) => e.status), sent.slice(0, 7).map(() => 202));
  // Each body is one event; the server has seen each one, the outbound one
  // included (accepted + rejected + duplicates proves arrival).
  const seen = (s) => s.accepted + s.rejected + (s.duplicates || 0);
  await until('the server to count every event', async () => seen(await stats()) - seen(before) === sent.length, 5000);
  assert.deepEqual(consoleErrors, []);
});

test('events sent as the page is hidden (visibilitychange, pagehide) go by sendBeacon and arrive once', async () => {
  const before = await stats();
  const leaving = await context.newPage();
  leaving.on('pageerror', (e) => consoleErrors.push('pageerror: ' + e.message));
  // No fetch on this page: an event that arrives came by navigator.sendBeacon,
  // the one other way the tracker sends. (The browser does not report a
  // beacon of a closing page to playwright: the server's store is checked.)
  await leaving.addInitScript(() => {
    delete window.fetch;
    window.fetch = undefined;
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'hidden') window.clickflow('page_hidden', { state: 'hidden' });
    });
    window.addEventListener('pagehide', () => window.clickflow('page_left'));
  });
  await leaving.goto(siteBase + '/checkout');
  assert.equal(await leaving.evaluate(() => typeof window.fetch), 'undefined');
  // Closing the tab hides the page: pagehide, then visibilitychange.
  await leaving.close({ runBeforeUnload: true });
  const mine = async () => {
    const r = await fetch(base + '/api/v1/streams/clicks/events?limit=1000');
    assert.equal(r.status, 200);
    return (await r.json()).items.filter((e) => e.page_url === siteBase + '/checkout');
  };
  const seen = (x) => x.accepted + x.rejected + (x.duplicates || 0);
  // The queued 'early' call, the pageview and the two page-hide events.
  await until('the page-hide events at the server', async () => (await mine()).length >= 4 &&
    seen(await stats()) - seen(before) >= 4, 5000);
  const got = await mine();
  const count = (n) => got.filter((e) => e.name === n).length;
  assert.deepEqual(['early', 'pageview', 'page_hidden', 'page_left'].map(count), [1, 1, 1, 1],
    JSON.stringify(got));
  assert.deepEqual(got.find((e) => e.name === 'page_hidden').properties, { state: 'hidden' });
  assert.equal(seen(await stats()) - seen(before), 4);
  assert.deepEqual(consoleErrors, []);
});

const { passed, failed } = await runTests(tests);
await context.close().catch(() => {});
site.close();
proc.kill('SIGTERM');
const t = setTimeout(() => proc.kill('SIGKILL'), 15000);
await exited;
clearTimeout(t);
if (failed) console.log('--- server log ---\n' + serverLog());
rmSync(dir, { recursive: true, force: true });
rmSync(profile, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
