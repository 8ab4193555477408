// Browser test of the dashboard's top-N panels (SPEC 15): top referrers, UTM
// sources, browsers, devices and countries, read from the built-in panel
// views (server/builtin_panels.c). The real binary with the test MMDB of
// tests/integration/mmdb_writer.py (--geoip), events posted with known user
// agents, referrers, UTM tags and from three loopback addresses (three
// countries, one unknown), and Debian's headless Chromium. Each panel must
// show the counts this test computes from what it posted (bots left out,
// NULL dimensions as "Direct" / "(none)"); a referrer that looks like HTML
// is shown as text. Prints "N passed, M failed".
//
//   CLICKFLOW_BIN=build/server/clickflow node tests/browser/panels.test.mjs
//
// Waits are for conditions with deadlines, never sleeps.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { freePort, launchBrowser, loadChromium, runTests, startClickflow, until } from './common.mjs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const BIN = process.env.CLICKFLOW_BIN || join(repo, 'build', 'server', 'clickflow');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const RULES = '/usr/share/uap-core/regexes.yaml';

const chromium = await loadChromium();

/* ---- what is posted, and what each panel must show ----------------------- */

// User agent -> [browser, device] as uap-core classifies them (the strings
// tests/integration/test_enrichment.py checks one by one); null: a bot.
const UAS = new Map([
  ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36',
    ['Chrome', 'desktop']],
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1',
    ['Mobile Safari', 'mobile']],
  ['Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)', null],
]);
const XSS_HOST = '<img src=x onerror=alert(1)>.example';
// Referrer -> the referrer_host the server derives (lower case, no port).
const REFERRERS = new Map([
  [null, 'Direct'],
  ['https://news.example/story?id=1', 'news.example'],
  ['https://Search.Example:8443/q', 'search.example'],
  [`https://${XSS_HOST}/`, XSS_HOST],
]);
const SOURCES = [null, 'newsletter', 'twitter'];
// Client address -> country in the test database; 127.0.0.3 is not in it.
const ADDRS = new Map([['127.0.0.1', 'NZ'], ['127.0.0.2', 'DE'], ['127.0.0.3', '(none)']]);

// A small deterministic generator: the same events every run.
let seed = 12345;
// (The high bits: an LCG's low bits repeat with a short period.)
const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return Math.floor(seed / 65536) % n; };
const pick = (xs) => xs[rnd(xs.length)];

function makeEvents(n, first) {
  const out = [];
  for (let i = first; i < first + n; i++) {
    const ua = pick([...UAS.keys()]);
    const ref = pick([...REFERRERS.keys()]);
    const src = pick(SOURCES);
    const ev = { user_id: 'u' + rnd(15), page_url: 'https://shop.example/p/' + rnd(3) + (src ? '?utm_source=' + src : ''),
      timestamp: Date.now(), event_id: 'e' + i };
    if (ref) ev.referrer = ref;
    out.push({ addr: pick([...ADDRS.keys()]), ua, ev });
  }
  return out;
}

const PANELS = {
  'panel-referrers': (s) => REFERRERS.get(s.ev.referrer ?? null),
  'panel-utm': (s) => (s.ev.page_url.split('utm_source=')[1] ?? '(none)'),
  'panel-browsers': (s) => UAS.get(s.ua)[0],
  'panel-devices': (s) => UAS.get(s.ua)[1],
  'panel-countries': (s) => ADDRS.get(s.addr),
};

// {panel id: {value: [events, visitors]}} over the humans.
function expected(sent) {
  const out = {};
  for (const [id, dim] of Object.entries(PANELS)) {
    const rows = {};
    for (const s of sent) {
      if (UAS.get(s.ua) === null) continue;   // bots stay out
      const v = dim(s);
      rows[v] = rows[v] || { n: 0, users: new Set() };
      rows[v].n++;
      rows[v].users.add(s.ev.user_id);
    }
    out[id] = Object.fromEntries(Object.entries(rows).map(([v, r]) => [v, [r.n, r.users.size]]));
  }
  return out;
}

/* ---- the server ---------------------------------------------------------- */

const dir = mkdtempSync(join(tmpdir(), 'clickflow-panels-'));
const mmdb = join(dir, 'country.mmdb');
execFileSync('python3', ['-c',
  'import sys; sys.path.insert(0, sys.argv[1]); import mmdb_writer; ' +
  'mmdb_writer.write_country_db(sys.argv[2], {"127.0.0.1/32": "NZ", "127.0.0.2/32": "DE"})',
  join(repo, 'tests', 'integration'), mmdb]);
const httpPort = await freePort();
let wsPort;
do wsPort = await freePort(); while (wsPort === httpPort);
const { proc, base, exited, serverLog } = await startClickflow(BIN, dir, httpPort, [
  '--bind', '127.0.0.1', '--http-port', String(httpPort), '--ws-port', String(wsPort),
  '--idle-timeout', '0', '--push-interval', '200ms', '--data-dir', join(dir, 'data'), '--geoip', mmdb,
]);

// POST from a given loopback address (the country) with a user agent.
function postFrom(addr, ua, events) {
  return new Promise((res, rej) => {
    const body = JSON.stringify(events);
    const req = request({ host: '127.0.0.1', port: httpPort, path: '/api/v1/events', method: 'POST',
      localAddress: addr, headers: { 'Content-Type': 'application/json', 'User-Agent': ua,
        'Content-Length': Buffer.byteLength(body) } }, (r) => {
      let text = '';
      r.on('data', (c) => { text += c; });
      r.on('end', () => {
        try {
          const j = JSON.parse(text);
          if (r.statusCode !== 202 || j.rejected !== 0) rej(new Error(r.statusCode + ' ' + text));
          else res(j);
        } catch (e) { rej(e); }
      });
    });
    req.on('error', rej);
    req.end(body);
  });
}

async function postAll(sent) {
  const groups = new Map();
  for (const s of sent) {
    const k = s.addr + '\u0000' + s.ua;
    if (!groups.has(k)) groups.set(k, { addr: s.addr, ua: s.ua, evs: [] });
    groups.get(k).evs.push(s.ev);
  }
  for (const g of groups.values()) await postFrom(g.addr, g.ua, g.evs);
}

/* ---- the browser ----------------------------------------------------------- */

const { profile, context, page, consoleErrors, dialogs } = await launchBrowser(chromium, CHROMIUM);

// What a panel shows: {value: [events, visitors]} from its table rows.
async function shown(id) {
  return page.evaluate((id) => Object.fromEntries([...document.querySelectorAll('#' + id + '-table tbody tr[data-value]')]
    .map((tr) => [tr.querySelector('td.page').textContent,
      [Number(tr.querySelector('td.count').textContent.replace(/,/g, '')),
        Number(tr.querySelector('td.visitors').textContent.replace(/,/g, ''))]])), id);
}

// Compared as contents (value -> counts), whatever the row order.
const canon = (o) => JSON.stringify(Object.keys(o).sort().map((id) =>
  [id, Object.keys(o[id]).sort().map((k) => [k, o[id][k]])]));

async function panelsShow(want, what) {
  let last;
  try {
    await until(what, async () => {
      last = {};
      for (const id of Object.keys(PANELS)) last[id] = await shown(id);
      return canon(last) === canon(want);
    }, 10000);
  } catch (e) {
    assert.deepEqual(last, want, e.message);
  }
}

const tests = [];
const test = (name, fn) => tests.push({ name, fn });
const sent = [];

test('the page loads, connects, and the panels start empty', async () => {
  await page.goto(base + '/');
  await page.waitForSelector('#conn-status[data-state="connected"]', { timeout: 10000 });
  for (const id of Object.keys(PANELS)) {
    await page.waitForSelector('#' + id + '[data-live="true"]', { timeout: 10000 });
    assert.deepEqual(await shown(id), {});
  }
});

test('each panel shows the counts computed from the posted events (pull on load)', async () => {
  sent.push(...makeEvents(120, 0));
  await postAll(sent);
  // A fresh page pulls every panel once subscribed.
  await page.reload();
  await page.waitForSelector('#conn-status[data-state="connected"]', { timeout: 10000 });
  const want = expected(sent);
  await panelsShow(want, 'the panels to show the posted counts');
  // Every dimension value is there: countries include the unknown address,
  // referrers "Direct", and no bot ("Googlebot", device "bot") shows.
  assert.ok('(none)' in want['panel-countries'] && 'Direct' in want['panel-referrers'] &&
    XSS_HOST in want['panel-referrers'] && '(none)' in want['panel-utm']);
  assert.ok(!('bot' in (await shown('panel-devices'))));
  // Rows are ordered by count, highest first.
  for (const id of Object.keys(PANELS)) {
    const counts = Object.values(await shown(id)).map((r) => r[0]);
    assert.deepEqual(counts, [...counts].sort((a, b) => b - a), id);
  }
});

test('the panels follow new events live (view:NAME pushes)', async () => {
  const more = makeEvents(60, 1000);
  sent.push(...more);
  await postAll(more);
  await panelsShow(expected(sent), 'the panels to show the new counts without a reload');
});

test('a referrer that looks like HTML is shown as text', async () => {
  const cells = await page.evaluate((host) => [...document.querySelectorAll('#panel-referrers-table td.page')]
    .filter((td) => td.textContent === host).map((td) => td.children.length), XSS_HOST);
  assert.deepEqual(cells, [0]);     // one cell, the text and no element in it
  assert.equal(await page.locator('#panel-referrers img').count(), 0);
  assert.deepEqual(dialogs, []);
  assert.deepEqual(consoleErrors, []);
});

let skipped = false;
try {
  readFileSync(RULES);
} catch (e) {
  skipped = true;   // no uap-core rules: browsers and devices are all NULL
}
const { passed, failed } = await runTests(skipped ? [] : tests);
if (skipped) console.log('skip: no uap-core rules at ' + RULES);
await context.close().catch(() => {});
proc.kill('SIGTERM');
const t = setTimeout(() => proc.kill('SIGKILL'), 15000);
await exited;
clearTimeout(t);
if (failed) console.log('--- server log ---\n' + serverLog());
rmSync(dir, { recursive: true, force: true });
rmSync(profile, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
