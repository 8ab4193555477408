// What every browser test shares: playwright-core's chromium (Debian's
// binary, no browser download), free loopback ports, starting the server,
// and waiting for a condition with a deadline instead of sleeping.
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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

// Starts clickflow (bin, args) with its log in dir/server.log and waits
// until its /healthz answers on httpPort. Returns the process, its base
// URL, a promise of its exit and a reader of its log.
export async function startClickflow(bin, dir, httpPort, args) {
  const logPath = join(dir, 'server.log');
  const logFd = openSync(logPath, 'a');
  const proc = spawn(bin, args, { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  const exited = new Promise((res) => proc.on('exit', (code, sig) => res(code ?? sig)));
  const base = `http://127.0.0.1:${httpPort}`;
  const serverLog = () => { try { return readFileSync(logPath, 'utf8'); } catch (e) { return ''; } };
  await until('the server to be ready', async () => {
    if (proc.exitCode !== null) throw new Error('clickflow exited:\n' + serverLog());
    return (await fetch(base + '/healthz')).status === 200;
  }, 20000);
  return { proc, base, exited, serverLog };
}

// Headless Chromium with a fresh profile. Console errors, page errors and
// dialogs (an alert() would mean injected script ran) are collected for
// the tests to assert on.
export async function launchBrowser(chromium, executablePath) {
  const profile = mkdtempSync(join(tmpdir(), 'clickflow-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 1400, height: 1000 },
  });
  const page = context.pages()[0] || await context.newPage();
  const consoleErrors = [];
  const dialogs = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push('pageerror: ' + e.message));
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  return { profile, context, page, consoleErrors, dialogs };
}

// Runs each { name, fn } in order, printing ok/FAIL with the stack of a
// failure; returns { passed, failed } (every test runs even after one fails).
export async function runTests(tests) {
  let passed = 0;
  let failed = 0;
  for (const t of tests) {
    try {
      await t.fn();
      passed++;
      console.log('ok   ' + t.name);
    } catch (e) {
      failed++;
      console.log('FAIL ' + t.name);
      console.log(String(e && e.stack ? e.stack : e).split('\n').map((l) => '     ' + l).join('\n'));
    }
  }
  return { passed, failed };
}
