// Browser test of the Plausible-compatible endpoint and site keys (SPEC 15):
// the real, unmodified npm `plausible-tracker` (tests/compat/package-lock.json)
// runs in a page of the site's own origin in Debian's headless Chromium and
// posts to the real clickflow binary; the same tracker and the clickflow
// tracker (GET /cf.js) on a page of a foreign origin are refused with 403 and
// counted nowhere. Prints "N passed, M failed".
//
//   CLICKFLOW_BIN=build/server/clickflow node tests/browser/compat.test.mjs
//
// The server has an ingest token, so only the site key lets these events in.
// Waits are for conditions with deadlines, never sleeps.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, openSync, readFileSync, closeSync, existsSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { freePort, loadChromium, runTests, until } from './common.mjs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const BIN = process.env.CLICKFLOW_BIN || join(repo, 'build', 'server', 'clickflow');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PLAUSIBLE = join(repo, 'tests', 'compat', 'node_modules', 'plausible-tracker', 'build', 'module');
const TOKEN = 'browser-secret-token';

const chromium = await loadChromium();
if (!existsSync(join(PLAUSIBLE, 'index.js'))) {
  console.error('plausible-tracker is missing: run `npm ci` in tests/compat (deploy/install-deps.sh --test does it)');
  console.log('0 passed, 1 failed');
  process.exit(1);
}

/* ---- the customer's sites: the site's origin and a foreign one ------------ */

// Serves a page and plausible-tracker's ES module build as published (its
// imports name files without ".js", as bundlers allow).
function siteServer(page) {
  return createHttpServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path.startsWith('/pt/')) {
      let file = normalize(join(PLAUSIBLE, path.slice(4)));
      if (!file.startsWith(PLAUSIBLE)) { res.writeHead(403); res.end(); return; }
      if (!file.endsWith('.js')) file += '.js';
      try {
        const body = readFileSync(file);
        res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8' });
        res.end(body);
      } catch (e) {
        res.writeHead(404);
        res.end();
      }
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(page);
  });
}
const listen = (srv) => new Promise((res) => srv.listen(0, '127.0.0.1', () => res(srv.address().port)));

const httpPort = await freePort();
let wsPort;
do wsPort = await freePort(); while (wsPort === httpPort);
const base = `http://127.0.0.1:${httpPort}`;

const plausiblePage = (domain) => `<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<script type="module">
import Plausible from '/pt/index';
const p = Plausible({ domain: '${domain}', apiHost: '${base}', trackLocalhost: true });
window.track = (name, props, done) => p.trackEvent(name, { props, callback: done });
p.trackPageview({}, { callback: () => { window.pageviewDone = true; } });
</script></head><body>shop</body></html>`;
const own = siteServer(plausiblePage('shop'));
const ownPort = await listen(own);
// "localhost" is another origin than the server's 127.0.0.1.
const ownBase = `http://localhost:${ownPort}`;
const foreignPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>copycat</title>
<script defer src="${base}/cf.js" data-site="shop"></script>
<script type="module">
import Plausible from '/pt/index';
const p = Plausible({ domain: 'shop', apiHost: '${base}', trackLocalhost: true });
p.trackPageview({}, { callback: () => { window.pageviewDone = true; } });
</script></head><body>copycat</body></html>`;
const foreign = siteServer(foreignPage);
const foreignBase = `http://localhost:${await listen(foreign)}`;

/* ---- the clickflow server -------------------------------------------------- */

const dir = mkdtempSync(join(tmpdir(), 'clickflow-compat-'));
const logPath = join(dir, 'server.log');
const logFd = openSync(logPath, 'a');
const proc = spawn(BIN, [
  '--bind', '127.0.0.1', '--http-port', String(httpPort), '--ws-port', String(wsPort),
  '--data-dir', join(dir, 'data'), '--ingest-token', TOKEN, '--site', `shop=${ownBase}`,
], { stdio: ['ignore', logFd, logFd] });
closeSync(logFd);
const exited = new Promise((res) => proc.on('exit', (code, sig) => res(code ?? sig)));
const serverLog = () => { try { return readFileSync(logPath, 'utf8'); } catch (e) { return ''; } };
await until('the server to be ready', async () => {
  if (proc.exitCode !== null) throw new Error('clickflow exited:\n' + serverLog());
  return (await fetch(base + '/healthz')).status === 200;
}, 20000);

const AUTH = { Authorization: 'Bearer ' + TOKEN };
async function stats() {
  const r = await fetch(base + '/api/v1/stats', { headers: AUTH });
  assert.equal(r.status, 200);
  return r.json();
}
async function responses(code) {
  const text = await (await fetch(base + '/metrics', { headers: AUTH })).text();
  const m = text.match(new RegExp(`^clickflow_http_responses_total\\{code="${code}"\\} (\\d+)$`, 'm'));
  assert.ok(m, 'no responses counter for ' + code);
  return Number(m[1]);
}
// [count, unique users] of a page: the count over its tumbling windows, the
// users from the sliding windows (5 min every minute), one of which holds
// all of a test's events even when they straddle a minute.
async function pageCount(url) {
  const r = await fetch(base + '/api/v1/windows?limit=100000', { headers: AUTH });
  const rows = (await r.json()).items.filter((w) => w.page_url === url);
  const tumbling = rows.filter((w) => w.type === 'tumbling');
  const sliding = rows.filter((w) => w.type === 'sliding');
  return [tumbling.reduce((a, w) => a + w.count, 0), Math.max(0, ...sliding.map((w) => w.unique_users))];
}

/* ---- the browser ------------------------------------------------------------ */

const profile = mkdtempSync(join(tmpdir(), 'clickflow-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  // A visitor's desktop Chrome: headless Chromium names itself HeadlessChrome,
  // which the enrichment flags as a bot (SPEC 15), and the built-in views this
  // test reads skip bots.
  userAgent: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const page = context.pages()[0] || await context.newPage();

// Every request to the compatible endpoint or the events endpoint, with the
// server's answer.
const sent = [];
context.on('request', (r) => {
  const u = r.url();
  if (u !== base + '/api/event' && u !== base + '/api/v1/events') return;
  const entry = { url: u, origin: null, type: r.headers()['content-type'], body: JSON.parse(r.postData()),
    status: null, acao: null };
  sent.push(entry);
  r.response().then(async (resp) => {
    // Origin is added by the network stack: only the full headers have it.
    entry.origin = (await r.allHeaders()).origin || null;
    entry.acao = resp ? (await resp.allHeaders())['access-control-allow-origin'] || null : null;
    entry.status = resp ? resp.status() : 'none';
  }, () => { entry.status = 'failed'; });
});

const tests = [];
const test = (name, fn) => tests.push({ name, fn });
const before = await stats();

test('plausible-tracker on the site: pageview and custom event, 202, counted once', async () => {
  await page.goto(ownBase + '/?utm_source=news', { referer: 'https://news.example/story' });
  await until('the pageview', () => page.evaluate(() => window.pageviewDone === true), 10000);
  await page.evaluate(() => new Promise((done) => window.track('signup', { plan: 'pro' }, done)));
  await until('both answers', () => sent.length === 2 && sent.every((e) => e.status !== null), 5000);
  // What the real tracker sends: short keys, text/plain, p a JSON string.
  const [pv, ev] = sent.map((e) => e.body);
  assert.equal(pv.n, 'pageview');
  assert.equal(pv.u, ownBase + '/?utm_source=news');
  assert.equal(pv.d, 'shop');
  assert.match(pv.r, /^https:\/\/news\.example\//);
  assert.equal(ev.n, 'signup');
  assert.equal(ev.p, JSON.stringify({ plan: 'pro' }));
  assert.match(sent[0].type, /^text\/plain/);
  assert.equal(sent[0].origin, ownBase);
  // Plausible's answer, readable by the page (CORS granted to its origin).
  assert.deepEqual(sent.map((e) => e.status), [202, 202]);
  assert.deepEqual(sent.map((e) => e.acao), [ownBase, ownBase]);
  const s = await stats();
  assert.equal(s.accepted - before.accepted, 2);
  assert.equal(s.rejected - before.rejected, 0);
  // Both events of one visitor (derived id: same site, IP and browser).
  assert.deepEqual(await pageCount(ownBase + '/?utm_source=news'), [2, 1]);
  // Enriched like POST /api/v1/events: the browser, the URL's tags, the referrer.
  const recent = await (await fetch(base + '/api/v1/streams/clicks/events?limit=10')).json();
  const mine = recent.items.filter((it) => it.page_url === ownBase + '/?utm_source=news');
  assert.deepEqual(mine.map((it) => [it.browser, it.is_bot, it.utm_source, it.referrer_host]),
    [['Chrome', false, 'news', 'news.example'], ['Chrome', false, 'news', 'news.example']]);
});

test('the site key used from a foreign origin: plausible-tracker and cf.js refused, nothing counted', async () => {
  const n0 = sent.length;
  const mid = await stats();
  const refused0 = await responses(403);
  await page.goto(foreignBase + '/');
  await until('both foreign requests sent', () => sent.length >= n0 + 2 &&
    sent.slice(n0).every((e) => e.status !== null), 10000);
  const foreignSent = sent.slice(n0);
  assert.deepEqual(foreignSent.map((e) => e.url).sort(), [base + '/api/event', base + '/api/v1/events']);
  // Chromium hides the answer to a request whose CORS check failed (and the
  // Origin it sent): the server's own count of 403 answers shows both were
  // refused, and no answer granted the foreign origin.
  await until('the server to refuse both', async () => (await responses(403)) - refused0 === 2, 5000);
  for (const e of foreignSent) {
    assert.ok(e.status === 403 || e.status === 'none' || e.status === 'failed', JSON.stringify(e));
    assert.equal(e.acao, null);
  }
  const s = await stats();
  assert.equal(s.accepted, mid.accepted);
  assert.equal(s.rejected, mid.rejected);
  assert.deepEqual(await pageCount(foreignBase + '/'), [0, 0]);
});

const { passed, failed } = await runTests(tests);
await context.close().catch(() => {});
own.close();
foreign.close();
proc.kill('SIGTERM');
const t = setTimeout(() => proc.kill('SIGKILL'), 15000);
await exited;
clearTimeout(t);
if (failed) console.log('--- server log ---\n' + serverLog() + '\n--- sent ---\n' + JSON.stringify(sent, null, 1));
rmSync(dir, { recursive: true, force: true });
rmSync(profile, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
