// Browser tests of the bundled dashboard: the real clickflow binary on free
// loopback ports, Debian's headless Chromium driven by playwright-core (which
// downloads no browser). Run with node; prints "N passed, M failed".
//
//   CLICKFLOW_BIN=build/server/clickflow node tests/browser/dashboard.test.mjs
//   UPDATE_SCREENSHOT=1 ...   also writes docs/dashboard.png
//
// Waits are for conditions (selectors, page state) with deadlines, never sleeps.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, openSync, readFileSync, closeSync } from 'node:fs';
import { freePort, launchBrowser, loadChromium, runTests, until } from './common.mjs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const BIN = process.env.CLICKFLOW_BIN || join(repo, 'build', 'server', 'clickflow');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const UPDATE_SCREENSHOT = process.env.UPDATE_SCREENSHOT === '1';
const XSS = '<img src=x onerror=alert(1)>';

const chromium = await loadChromium();

class Server {
  // Starts the binary; a second start() after stop() reuses the ports and
  // the data directory (a restart).
  async start(extraArgs = []) {
    if (!this.dir) {
      this.http = await freePort();
      do {
        this.ws = await freePort();  // the OS may hand out the same free port twice
      } while (this.ws === this.http);
      this.dir = mkdtempSync(join(tmpdir(), 'clickflow-browser-'));
    }
    this.logPath = join(this.dir, 'server.log');
    const log = openSync(this.logPath, 'a');
    this.proc = spawn(BIN, [
      '--bind', '127.0.0.1', '--http-port', String(this.http), '--ws-port', String(this.ws),
      '--idle-timeout', '0', '--push-interval', '200ms', '--data-dir', join(this.dir, 'data'),
      ...extraArgs,
    ], { stdio: ['ignore', log, log] });
    closeSync(log);
    this.exited = new Promise((res) => this.proc.on('exit', (code, sig) => res(code ?? sig)));
    this.base = `http://127.0.0.1:${this.http}`;
    await until('the server to be ready', async () => {
      if (this.proc.exitCode !== null) throw new Error('clickflow exited:\n' + this.log());
      const r = await fetch(this.base + '/healthz');
      return r.status === 200;
    }, 20000);
    return this;
  }

  log() {
    try { return readFileSync(this.logPath, 'utf8'); } catch (e) { return ''; }
  }

  async post(events, headers = {}) {
    const r = await fetch(this.base + '/api/v1/events', {
      method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(events),
    });
    const body = await r.json();
    assert.equal(r.status, 202, JSON.stringify(body));
    assert.equal(body.rejected, 0, JSON.stringify(body));
    return body;
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 15000);
    await this.exited;
    clearTimeout(t);
  }

  cleanup() {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/* ---- the tests (they share one server and one page, in order) ---------- */

const srv = await new Server().start();
const { profile, context, page, consoleErrors, dialogs } = await launchBrowser(chromium, CHROMIUM);

const now = Date.now();
const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('loads with no console errors and connects', async () => {
  const resp = await page.goto(srv.base + '/');
  assert.equal(resp.status(), 200);
  assert.match(await page.title(), /clickflow/);
  await page.waitForSelector('#conn-status[data-state="connected"]', { timeout: 10000 });
  assert.equal(await page.textContent('#conn-status'), 'connected');
  // Both charts are uPlot canvases, served from the binary (no CDN).
  await page.waitForSelector('#chart-rate canvas', { state: 'attached' });
  await page.waitForSelector('#chart-pages canvas', { state: 'attached' });
  assert.equal(await page.evaluate(() => typeof uPlot), 'function');
  // Stats arrive every second: the accepted counter becomes a number.
  await page.waitForFunction(() => /^\d/.test(document.getElementById('kpi-accepted').textContent),
    null, { timeout: 5000 });
  assert.deepEqual(consoleErrors, []);
});

test('posted events show in trending and the window chart within two seconds', async () => {
  const events = [];
  for (let i = 0; i < 7; i++) events.push({ user_id: 'u' + i, page_url: '/products/42', timestamp: now + i });
  for (let i = 0; i < 3; i++) events.push({ user_id: 'u' + i, page_url: '/cart', timestamp: now + i });
  await srv.post(events);
  const t0 = Date.now();
  await page.waitForFunction(() => [...document.querySelectorAll('#trending-table tbody td.page')]
    .some((td) => td.textContent === '/products/42'), null, { timeout: 2000 });
  await page.waitForFunction(() => [...document.querySelectorAll('#pages-table tbody tr')]
    .some((tr) => tr.cells[0].textContent === '/products/42' && tr.cells[1].textContent === '7'),
  null, { timeout: Math.max(100, 2000 - (Date.now() - t0)) });
  // Trending is ordered by score: 7 clicks before 3.
  const order = await page.$$eval('#trending-table tbody td.page', (tds) => tds.map((t) => t.textContent));
  assert.ok(order.indexOf('/products/42') < order.indexOf('/cart'), order.join(','));
  // The bar chart holds the same pages (uPlot draws on canvas; its data is the table's).
  const bars = await page.$$eval('#pages-table tbody tr', (trs) => trs.map((tr) => tr.cells[0].textContent));
  assert.deepEqual(bars.slice(0, 2), ['/products/42', '/cart']);
});

test('a page_url with HTML in it is shown as text', async () => {
  await srv.post([{ user_id: 'attacker', page_url: XSS, timestamp: now + 10 },
    { user_id: 'attacker', page_url: XSS, timestamp: now + 11 }]);
  await page.waitForFunction((x) => [...document.querySelectorAll('#trending-table tbody td.page')]
    .some((td) => td.textContent === x), XSS, { timeout: 2000 });
  await page.waitForFunction((x) => [...document.querySelectorAll('#pages-table tbody td.page')]
    .some((td) => td.textContent === x), XSS, { timeout: 2000 });
  // Visible as text, never turned into an element, no script ran.
  const cell = page.locator('#trending-table tbody td.page', { hasText: XSS }).first();
  assert.ok(await cell.isVisible());
  assert.equal(await page.locator('img[src="x"]').count(), 0);
  assert.equal(await page.evaluate(() => document.querySelectorAll('img').length), 0);
  assert.deepEqual(dialogs, []);
  assert.deepEqual(consoleErrors, []);
});

test('seeds trending and windows from REST on a fresh load', async () => {
  const fresh = await context.newPage();
  try {
    // Offline WebSocket on purpose: the tables must come from REST alone.
    await fresh.goto(srv.base + '/?ws=' + encodeURIComponent('ws://127.0.0.1:1/'));
    await fresh.waitForFunction(() => [...document.querySelectorAll('#trending-table tbody td.page')]
      .some((td) => td.textContent === '/products/42'), null, { timeout: 5000 });
    await fresh.waitForFunction(() => [...document.querySelectorAll('#pages-table tbody tr')]
      .some((tr) => tr.cells[0].textContent === '/products/42' && tr.cells[1].textContent === '7'),
    null, { timeout: 5000 });
    await fresh.waitForSelector('#conn-status[data-state="disconnected"]', { timeout: 10000 });
  } finally {
    await fresh.close();
  }
});

/* Past ranges read the rollups of history.db. A server of its own, fed in
 * replay mode (--idle-timeout 0): clicks 2 and 3 days ago (this period of
 * 7 days) and 10 days ago (the previous 7 days), then a watermark POST that
 * closes every window so the results reach history.db. The expected totals
 * are counted from what is sent here. The site key holds characters that
 * are HTML (site keys allow any printable ASCII but space , ; =). */
const SITE_KEY = 'blog<b>"&\'1';
const DAY = 24 * 3600000;

test('last 7 days shows rollup totals and the change against the previous 7 days; back to live', async () => {
  const hist = await new Server().start(['--site', SITE_KEY + '=https://blog.example']);
  const p = await context.newPage();
  const errors = [];
  p.on('pageerror', (e) => errors.push(e.message));
  p.on('dialog', (d) => { errors.push('dialog: ' + d.message()); d.dismiss().catch(() => {}); });
  try {
    await until('recovery to finish', async () => (await fetch(hist.base + '/readyz')).status === 200);
    const t0 = Date.now();
    const burst = (at, n, page) => Array.from({ length: n }, (_, i) => (
      { user_id: 'h' + (i % 4), page_url: page, timestamp: at + i * 1000, event_id: page + '-' + at + '-' + i }));
    const previous = burst(t0 - 10 * DAY, 10, '/old');
    const current = [...burst(t0 - 3 * DAY, 9, '/a'), ...burst(t0 - 2 * DAY, 6, '/b')];
    await hist.post(previous);
    await hist.post(current);
    const wm = await fetch(hist.base + '/api/v1/watermark', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ watermark: t0 - 3600000 }),
    });
    assert.equal(wm.status, 200);
    // history.db is written by its own thread: wait until it has it all.
    await until('history.db to hold the closed windows', async () => {
      const s = await (await fetch(hist.base + '/api/v1/stats')).json();
      return s.history && s.history.pending === 0 && s.history.written > 0;
    });
    const wantCur = current.length;
    const wantPrev = previous.length;
    const wantPct = Math.round((wantCur - wantPrev) * 100 / wantPrev);

    await p.goto(hist.base + '/');
    await p.waitForSelector('#conn-status[data-state="connected"]', { timeout: 10000 });
    assert.equal(await p.isVisible('#history'), false);
    await p.click('#range button[data-range="7d"]');
    assert.equal(await p.getAttribute('#range button[data-range="7d"]', 'aria-pressed'), 'true');
    await p.waitForFunction((w) => document.getElementById('hist-clicks').textContent === w,
      String(wantCur), { timeout: 5000 });
    assert.equal(await p.textContent('#hist-prev'), String(wantPrev));
    assert.equal(await p.textContent('#hist-change'), '+' + wantPct + '% vs previous 7 days');
    // Each session's page views, summed: all of them are in this period.
    assert.equal(await p.textContent('#hist-pv'), String(wantCur));
    assert.equal(await p.textContent('#hist-title'), 'Last 7 days');
    assert.ok(await p.isVisible('#history'));
    assert.ok(await p.isVisible('#chart-hist canvas'));
    assert.equal(await p.isVisible('#chart-rate'), false);

    // 30 days: the previous period is empty, the current holds all.
    await p.click('#range button[data-range="30d"]');
    await p.waitForFunction((w) => document.getElementById('hist-clicks').textContent === w,
      String(wantCur + wantPrev), { timeout: 5000 });
    assert.equal(await p.textContent('#hist-change'), 'no clicks in the previous 30 days');

    // Back to live: the history card goes, the live panels follow the socket.
    await p.click('#range button[data-range="live"]');
    assert.equal(await p.isVisible('#history'), false);
    assert.ok(await p.isVisible('#chart-rate'));
    await hist.post([{ user_id: 'live', page_url: '/live-again', timestamp: Date.now() }]);
    await p.waitForFunction(() => [...document.querySelectorAll('#trending-table tbody td.page')]
      .some((td) => td.textContent === '/live-again'), null, { timeout: 3000 });

    // The snippet panel: the key as text, and HTML-escaped inside the line.
    const row = await p.$$eval('#snippet-table tbody tr', (trs) => trs.map((tr) =>
      [tr.cells[0].textContent, tr.cells[1].textContent, tr.cells[2].textContent]));
    const escaped = SITE_KEY.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
    assert.deepEqual(row, [[SITE_KEY, 'https://blog.example',
      `<script defer src="${hist.base}/cf.js" data-site="${escaped}"></script>`]]);
    assert.equal(await p.locator('#snippet-table b, #snippet-table script').count(), 0);
    assert.deepEqual(errors, []);
  } finally {
    await p.close();
    await hist.stop();
    hist.cleanup();
  }
});

test('the snippet panel says when no site key is configured', async () => {
  await page.waitForFunction(() => document.querySelector('#snippet-table tbody tr.empty td')
    .textContent.startsWith('no site keys configured'), null, { timeout: 5000 });
});

if (UPDATE_SCREENSHOT) {
  test('screenshot (UPDATE_SCREENSHOT=1)', async () => {
    // A server of its own, fed a few minutes of realistic traffic in event
    // time: Zipf-skewed pages, users with sessions, a closed and an open
    // tumbling window, some resent and some late events.
    const shot = await new Server().start(['--session-gap', '20s',
      '--site', 'blog-7f3a=https://blog.example,https://www.blog.example', '--site', 'shop-19c2=https://shop.example']);
    const p = await context.newPage();
    try {
      await p.setViewportSize({ width: 1400, height: 1000 });
      await p.goto(shot.base + '/');
      await p.waitForSelector('#conn-status[data-state="connected"]', { timeout: 10000 });
      const pages = ['/', '/pricing', '/products/7', '/products/12', '/blog/launch-week',
        '/docs/getting-started', '/cart', '/checkout', '/search?q=running+shoes', '/about',
        '/signup', '/products/3', '/careers', '/docs/api'];
      const zipf = pages.map((_, k) => 1 / Math.pow(k + 1, 1.05));
      const zsum = zipf.reduce((a, b) => a + b, 0);
      let seed = 42;
      const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
      const pick = () => {
        let r = rnd() * zsum;
        for (let k = 0; k < pages.length; k++) if ((r -= zipf[k]) <= 0) return pages[k];
        return pages[0];
      };
      // Traffic from three browsers, with referrers and UTM tags, so the
      // top-N panels (referrers, UTM sources, browsers, devices) fill.
      const agents = [
        'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36',
        'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1',
        'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0'];
      const referrers = [null, null, 'https://www.google.com/', 'https://news.ycombinator.com/item?id=1',
        'https://www.google.com/', 'https://t.co/abc', 'https://duckduckgo.com/'];
      const utms = [null, null, null, 'newsletter', 'twitter', 'launch-week'];
      const m0 = Math.floor(Date.now() / 60000) * 60000 - 120000;
      let seq = 0;
      await until('recovery to finish', async () => (await fetch(shot.base + '/readyz')).status === 200);
      // History first (event time only moves forward): 14 days of hourly
      // traffic with a daily rhythm and growth, closed by a watermark an
      // hour before the live traffic; the "last 7 days" view is taken then.
      for (let d = 14; d >= 1; d--) {
        const day = [];
        for (let h = 0; h < 24; h++) {
          const hourStart = m0 - d * DAY + h * 3600000;
          const n = Math.round((40 + 30 * Math.sin((h - 8) / 24 * 2 * Math.PI)) * (1 + (14 - d) / 14));
          for (let i = 0; i < n; i++) {
            day.push({ user_id: 'user-' + Math.floor(rnd() * 400), page_url: pick(),
              timestamp: hourStart + Math.floor(i * 3600000 / n), event_id: 'past-' + seq++ });
          }
        }
        await shot.post(day, { 'User-Agent': agents[d % agents.length] });
      }
      const wm = await fetch(shot.base + '/api/v1/watermark', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ watermark: m0 - 3600000 }),
      });
      assert.equal(wm.status, 200);
      await until('history.db to catch up', async () => {
        const st = await (await fetch(shot.base + '/api/v1/stats')).json();
        return st.history && st.history.pending === 0 && st.history.written > 0;
      });
      await p.click('#range button[data-range="7d"]');
      await p.waitForFunction(() => /^\d/.test(document.getElementById('hist-clicks').textContent) &&
        document.getElementById('hist-change').textContent.includes('vs previous'), null, { timeout: 5000 });
      const outHist = join(repo, 'docs', 'dashboard-history.png');
      await p.screenshot({ path: outHist, fullPage: true });
      console.log('wrote ' + outHist);
      await p.click('#range button[data-range="live"]');
      const sent = [];
      // Window A: [m0, m0+60s), users 0..299; window B: users 150..449 from m0+60s.
      for (let round = 0; round < 9; round++) {
        const batch = [];
        const n = 260 + 90 * (round % 4);
        const inB = round >= 4;
        for (let i = 0; i < n; i++) {
          const ts = inB ? m0 + 60000 + (round - 4) * 8000 + Math.floor(rnd() * 8000)
            : m0 + round * 15000 + Math.floor(rnd() * 15000);
          const user = (inB ? 150 : 0) + Math.floor(rnd() * 300);
          const ev = { user_id: 'user-' + user, page_url: pick(), timestamp: ts, event_id: 'shot-' + seq++ };
          const ref = referrers[Math.floor(rnd() * referrers.length)];
          const utm = utms[Math.floor(rnd() * utms.length)];
          if (ref) ev.referrer = ref;
          if (utm) ev.page_url += (ev.page_url.includes('?') ? '&' : '?') + 'utm_source=' + utm;
          batch.push(ev);
          sent.push(ev);
        }
        if (round >= 5) batch.push(...sent.slice(-12));   // resent: duplicates
        if (round === 7) {
          for (let i = 0; i < 3; i++) {
            batch.push({ user_id: 'user-' + (900 + i), page_url: pages[i + 2], timestamp: m0 - 600000 + i * 1000 });
          }
        }
        await shot.post(batch, { 'User-Agent': agents[round % agents.length] });
        const before = await p.textContent('#kpi-accepted');
        await p.waitForFunction((b) => document.getElementById('kpi-accepted').textContent !== b,
          before, { timeout: 5000 });
      }
      await p.waitForFunction(() => document.querySelectorAll('#sessions-table tbody tr:not(.empty)').length >= 5 &&
        document.querySelectorAll('#late-table tbody tr:not(.empty)').length >= 1 &&
        document.querySelectorAll('#pages-table tbody tr').length >= 8, null, { timeout: 10000 });
      const out = join(repo, 'docs', 'dashboard.png');
      mkdirSync(dirname(out), { recursive: true });
      await p.screenshot({ path: out, fullPage: true });
      console.log('wrote ' + out);
    } finally {
      await p.close();
      await shot.stop();
      shot.cleanup();
    }
  });
}

test('lists a user view and renders its table and bars live from pushes', async () => {
  // A windowed count per element, over this test's page only.
  const sql = "CREATE VIEW clicks_by_el AS SELECT element, COUNT(*) AS n FROM clicks " +
    "WHERE page_url = '/views-test' WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY element";
  const r = await fetch(srv.base + '/api/v1/sql', { method: 'POST', headers: { 'Content-Type': 'application/sql' }, body: sql });
  assert.equal(r.status, 200, await r.text());
  await page.reload();
  await page.waitForSelector('#conn-status[data-state="connected"]', { timeout: 10000 });
  const pick = await page.waitForSelector('#views-list button.view-pick[data-view="clicks_by_el"]', { timeout: 5000 });
  const shownSql = await page.$eval('#views-list td.sql code', (e) => e.textContent);
  assert.equal(shownSql, sql);
  await pick.click();
  // Subscribed to view:clicks_by_el and seeded from the pull query.
  await page.waitForSelector('#views[data-live="clicks_by_el"]', { timeout: 5000 });

  // Every event of the test falls in one tumbling minute.
  let ts = now + 30;
  if (Math.floor((ts + 10) / 60000) !== Math.floor(ts / 60000)) ts = Math.floor((ts + 10) / 60000) * 60000;
  const expected = new Map();
  const send = async (elements) => {
    const events = elements.map((element, i) => ({ user_id: 'vu' + i, page_url: '/views-test', element, timestamp: ts + i }));
    for (const e of elements) expected.set(e, (expected.get(e) || 0) + 1);
    await srv.post(events);
  };
  const shown = () => page.evaluate(() => ({
    bars: Object.fromEntries([...document.querySelectorAll('#view-bars .vbar-row')]
      .map((r) => [r.querySelector('.vbar-label').textContent, Number(r.querySelector('.vbar-value').textContent)])),
    table: Object.fromEntries([...document.querySelectorAll('#view-table tbody tr')].filter((r) => !r.classList.contains('empty'))
      .map((r) => [r.querySelector('td[data-col="element"]').textContent, Number(r.querySelector('td[data-col="n"]').textContent)])),
  }));
  const matches = async () => {
    const s = await shown();
    const want = Object.fromEntries(expected);
    try {
      assert.deepEqual(s.bars, want);
      assert.deepEqual(s.table, want);
      return true;
    } catch (e) {
      return false;
    }
  };

  await send(['buy', 'buy', XSS, 'buy']);
  await until('the first counts in the view panel', matches, 5000);
  await send(['buy', 'nav', 'buy']);
  await until('the updated counts in the view panel', matches, 5000);
  // The element with HTML in it is text: no element was created, no dialog.
  assert.equal(await page.$$eval('#views img', (x) => x.length), 0);
  assert.deepEqual(dialogs, []);
});

test('a running view (no window) with HTML in its name renders as a table without bars', async () => {
  const name = 'per<b>user';
  const sql = 'CREATE VIEW "' + name + "\" AS SELECT user_id, COUNT(*) AS c FROM clicks WHERE page_url = '/views-run' GROUP BY user_id";
  const r = await fetch(srv.base + '/api/v1/sql', { method: 'POST', headers: { 'Content-Type': 'application/sql' }, body: sql });
  assert.equal(r.status, 200, await r.text());
  const expected = { ra: 2, rb: 1 };
  await srv.post([{ user_id: 'ra', page_url: '/views-run', timestamp: now + 31 },
    { user_id: 'ra', page_url: '/views-run', timestamp: now + 32 },
    { user_id: 'rb', page_url: '/views-run', timestamp: now + 33 }]);
  await page.reload();
  await page.waitForSelector('#conn-status[data-state="connected"]', { timeout: 10000 });
  // The name is text: the button reads it back unchanged, no <b> was made.
  await until('the running view in the list', () => page.evaluate((n) => [...document.querySelectorAll('#views-list button.view-pick')]
    .some((b) => b.textContent === n), name), 5000);
  assert.equal(await page.$$eval('#views-list b', (x) => x.length), 0);
  await page.evaluate((n) => [...document.querySelectorAll('#views-list button.view-pick')].find((b) => b.textContent === n).click(), name);
  await page.waitForFunction((n) => document.getElementById('views').dataset.live === n, name, { timeout: 5000 });
  const table = () => page.evaluate(() => Object.fromEntries([...document.querySelectorAll('#view-table tbody tr')]
    .filter((r) => !r.classList.contains('empty'))
    .map((r) => [r.querySelector('td[data-col="user_id"]').textContent, Number(r.querySelector('td[data-col="c"]').textContent)])));
  const matches = async () => JSON.stringify(await table()) === JSON.stringify(
    Object.fromEntries(Object.entries(expected).sort(([a], [b]) => (a < b ? -1 : 1))));
  // Seeded by the pull query: the events came before the page loaded.
  await until('the running rows from the pull query', matches, 5000);
  assert.equal(await page.$eval('#view-bars', (e) => e.hidden), true);
  // Then live: a new group and a changed one.
  await srv.post([{ user_id: 'rb', page_url: '/views-run', timestamp: now + 34 },
    { user_id: 'rc', page_url: '/views-run', timestamp: now + 35 }]);
  expected.rb += 1;
  expected.rc = 1;
  await until('the running rows updated by pushes', matches, 5000);
  assert.deepEqual(consoleErrors, []);   // e.g. no CSP refusal of the bar widths
});

test('shows "disconnected" when the server stops', async () => {
  await srv.stop();
  // State, text and visibility read in one go: the page retries after about
  // half a second and shows "connecting…" then, so two separate reads can
  // straddle a retry on a loaded machine.
  const seen = await page.waitForFunction(() => {
    const s = document.getElementById('conn-status');
    return s.dataset.state === 'disconnected' &&
      { text: s.textContent, visible: s.offsetWidth > 0 && s.offsetHeight > 0 };
  }, null, { timeout: 10000 });
  assert.deepEqual(await seen.jsonValue(), { text: 'disconnected', visible: true });
});

test('reconnects by itself when the server is back', async () => {
  await srv.start();
  await page.waitForSelector('#conn-status[data-state="connected"]', { timeout: 30000 });
  // Live again: new events reach the page through the new connection.
  await srv.post([{ user_id: 'back', page_url: '/after-restart', timestamp: now + 20 }]);
  await page.waitForFunction(() => [...document.querySelectorAll('#trending-table tbody td.page')]
    .some((td) => td.textContent === '/after-restart'), null, { timeout: 3000 });
});

const { passed, failed } = await runTests(tests);
await context.close().catch(() => {});
await srv.stop();
if (failed) console.log('--- server log ---\n' + srv.log());
srv.cleanup();
rmSync(profile, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
