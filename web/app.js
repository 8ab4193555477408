/* clickflow dashboard.
 *
 * Finds the WebSocket endpoint by itself (GET /api/v1/info -> ws_port and
 * ws_path, on this page's host; a ?ws=<url> query parameter overrides it),
 * seeds its tables from REST, then follows the live push messages
 * {"type": "windows"|"trending"|"session_end"|"stats"|"late", "data": ...}.
 * Reconnects with exponential backoff and shows "disconnected" meanwhile.
 * A ?token=<t> query parameter is sent as a Bearer token to REST and as
 * ?token= to the WebSocket (for servers started with --read-token).
 *
 * The range picker (live, last hour, day, 7 days, 30 days; ?range= picks it
 * at load) swaps the live panels for totals and a chart read from the
 * rollups of history.db (GET /api/v1/views/{name}/rollup), compared with the
 * previous period of the same length. The WebSocket stays connected, so
 * going back to live shows current numbers at once.
 *
 * The top-N panels (referrers, UTM sources, browsers, devices, countries)
 * read the built-in panel views (server/builtin_panels.c): a pull query
 * when the server confirms the view:NAME subscription and every
 * PANELS_REFRESH_MS, merged with the view's pushes in between.
 *
 * The Views panel lists the user's SQL views; selecting one subscribes to
 * view:NAME, pulls its rows (POST /api/v1/query) and merges the pushes.
 *
 * Every string that comes from the server (page URLs, user ids, reasons,
 * site keys) is put on the page with textContent, never parsed as HTML. */
'use strict';

(function () {
  const params = new URLSearchParams(window.location.search);
  const token = params.get('token') || '';
  const wsOverride = params.get('ws') || '';

  const RATE_POINTS = 180;          // seconds of history in the rate chart
  const TOP_PAGES = 10;             // bars in the page chart
  const KEEP_WINDOWS = 6;           // tumbling windows remembered
  const KEEP_SESSIONS = 12;         // session rows shown
  const MEAN_OVER = 200;            // sessions averaged for the mean duration
  const KEEP_LATE = 12;             // late rows shown
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;

  const $ = (id) => document.getElementById(id);
  const nf = new Intl.NumberFormat('en-US');
  const nf1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
  const nf2 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  /* ---- state ----------------------------------------------------------- */

  const state = {
    rateX: [],                      // unix seconds
    rateY: [],                      // events per second
    lastAccepted: null,             // for a rate when stats carry none
    lastAcceptedAt: 0,
    windows: new Map(),             // tumbling start -> {start, end, closed, pages: Map}
    trending: null,
    sessions: [],                   // newest first
    sessionsEnded: 0,
    durations: [],                  // newest last, at most MEAN_OVER
    late: [],                       // newest first
    stats: null,
  };

  /* ---- formatting ------------------------------------------------------ */

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  // Epoch-ms values far outside any real clock mean "no time yet".
  const isTime = (v) => isNum(v) && v > 0 && v < 8.64e15;

  function fmtCount(v) { return isNum(v) ? nf.format(v) : '–'; }

  function fmtDuration(ms) {
    if (!isNum(ms)) return '–';
    const neg = ms < 0;
    ms = Math.abs(ms);
    let out;
    if (ms < 1000) out = Math.round(ms) + ' ms';
    else if (ms < 60000) out = nf1.format(ms / 1000) + ' s';
    else if (ms < 3600000) out = Math.floor(ms / 60000) + 'm ' + Math.round((ms % 60000) / 1000) + 's';
    else out = Math.floor(ms / 3600000) + 'h ' + Math.round((ms % 3600000) / 60000) + 'm';
    return neg ? '−' + out : out;
  }

  function fmtTime(ms) {
    if (!isTime(ms)) return '–';
    return new Date(ms).toISOString().replace('T', ' ').replace('Z', ' UTC');
  }

  function fmtClock(ms) {
    if (!isTime(ms)) return '–';
    return new Date(ms).toISOString().slice(11, 19);
  }

  /* ---- DOM helpers (text only) ---------------------------------------- */

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function cell(text, cls, title) {
    const td = el('td', cls, text);
    if (title !== undefined) td.title = String(title);
    return td;
  }

  function setText(id, text) {
    const e = $(id);
    if (e && e.textContent !== text) e.textContent = text;
  }

  function fillTable(tableId, rows, emptyText, columns) {
    const tbody = $(tableId).tBodies[0];
    const frag = document.createDocumentFragment();
    if (rows.length === 0) {
      const tr = el('tr', 'empty');
      const td = cell(emptyText);
      td.colSpan = columns;
      tr.appendChild(td);
      frag.appendChild(tr);
    } else {
      for (const r of rows) frag.appendChild(r);
    }
    tbody.replaceChildren(frag);
  }

  /* ---- charts ---------------------------------------------------------- */

  const axisStyle = {
    stroke: '#8c97ad',
    grid: { stroke: 'rgba(140,151,173,0.12)', width: 1 },
    ticks: { stroke: 'rgba(140,151,173,0.25)', width: 1 },
    font: '12px system-ui, sans-serif',
  };

  function chartWidth(id) {
    return Math.max(280, $(id).clientWidth || 600);
  }

  let rateChart = null;
  let pagesChart = null;
  let pageLabels = [];

  function makeCharts() {
    if (typeof uPlot !== 'function') return;   // charts are optional; tables still work
    rateChart = new uPlot({
      width: chartWidth('chart-rate'),
      height: 220,
      cursor: { drag: { x: false, y: false } },
      legend: { show: false },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(10, max * 1.15)] } },
      series: [
        {},
        {
          label: 'events / s',
          stroke: '#4fb3ff',
          width: 2,
          fill: 'rgba(79,179,255,0.12)',
          points: { show: false },
          value: (u, v) => (v == null ? '–' : nf1.format(v)),
        },
      ],
      axes: [
        Object.assign({}, axisStyle, {
          space: 80,
          // Whole seconds, UTC like the rest of the page.
          incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600],
          values: (u, vals) => vals.map((v) => fmtClock(v * 1000)),
        }),
        Object.assign({}, axisStyle, { size: 56, values: (u, vals) => vals.map((v) => nf.format(v)) }),
      ],
    }, [[], []], $('chart-rate'));

    const bars = uPlot.paths && uPlot.paths.bars;
    pagesChart = new uPlot({
      width: chartWidth('chart-pages'),
      height: 240,
      cursor: { show: false },
      legend: { show: true, live: false },
      scales: {
        x: { time: false, range: (u) => [-0.6, Math.max(0, u.data[0].length - 1) + 0.6] },
        y: { range: (u, min, max) => [0, Math.max(5, max * 1.15)] },
      },
      series: [
        {},
        {
          label: 'current window',
          stroke: '#4fb3ff',
          fill: 'rgba(79,179,255,0.75)',
          width: 0,
          points: { show: false },
          paths: bars ? bars({ size: [0.36, 60], align: -1 }) : undefined,
        },
        {
          label: 'last closed window',
          stroke: '#b48cff',
          fill: 'rgba(180,140,255,0.55)',
          width: 0,
          points: { show: false },
          paths: bars ? bars({ size: [0.36, 60], align: 1 }) : undefined,
        },
      ],
      axes: [
        Object.assign({}, axisStyle, {
          grid: { show: false },
          size: 64,
          rotate: -20,
          splits: (u) => u.data[0].map((_, i) => i),
          values: (u, splits) => splits.map((i) => shortLabel(pageLabels[i])),
        }),
        Object.assign({}, axisStyle, { size: 56, values: (u, vals) => vals.map((v) => nf.format(v)) }),
      ],
    }, [[], [], []], $('chart-pages'));

    if (typeof ResizeObserver === 'function') {
      const ro = new ResizeObserver(() => {
        rateChart.setSize({ width: chartWidth('chart-rate'), height: 220 });
        pagesChart.setSize({ width: chartWidth('chart-pages'), height: 240 });
      });
      ro.observe($('chart-rate'));
      ro.observe($('chart-pages'));
    }
  }

  function shortLabel(s) {
    if (s === undefined || s === null) return '';
    s = String(s);
    return s.length > 22 ? s.slice(0, 21) + '…' : s;
  }

  /* ---- model updates --------------------------------------------------- */

  function onStats(s) {
    if (!s || typeof s !== 'object') return;
    state.stats = s;
    const now = Date.now();
    // Events per second as this page sees them: the change of `accepted`
    // between two stats messages about a second apart. The server's own
    // ingest_rate is the fallback (first sample, after a gap).
    let rate = null;
    const dt = now - state.lastAcceptedAt;
    if (isNum(s.accepted) && state.lastAccepted !== null && dt >= 300 && dt <= 5000) {
      rate = Math.max(0, (s.accepted - state.lastAccepted) * 1000 / dt);
    } else if (isNum(s.ingest_rate)) {
      rate = s.ingest_rate;
    }
    if (isNum(s.accepted)) {
      state.lastAccepted = s.accepted;
      state.lastAcceptedAt = now;
    }
    if (isNum(rate)) {
      state.rateX.push(now / 1000);
      state.rateY.push(rate);
      if (state.rateX.length > RATE_POINTS) {
        state.rateX.shift();
        state.rateY.shift();
      }
    }
  }

  function onWindows(list) {
    if (!Array.isArray(list)) return;
    for (const r of list) {
      if (!r || r.type !== 'tumbling' || !isNum(r.start) || typeof r.page_url !== 'string') continue;
      let w = state.windows.get(r.start);
      if (!w) {
        w = { start: r.start, end: r.end, closed: false, pages: new Map() };
        state.windows.set(r.start, w);
      }
      const old = w.pages.get(r.page_url);
      const rev = isNum(r.revision) ? r.revision : 0;
      const next = {
        count: isNum(r.count) ? r.count : 0,
        users: isNum(r.unique_users) ? r.unique_users : 0,
        revision: rev,
        final: r.final === true,
      };
      // Newer revisions win; within one revision interim counts only grow, so
      // a REST answer older than a live update does not move a count back.
      if (!old || rev > old.revision || (rev === old.revision &&
          (next.final || (!old.final && next.count >= old.count)))) {
        w.pages.set(r.page_url, next);
      }
      if (r.final === true) w.closed = true;
    }
    // Remember the newest few windows only.
    if (state.windows.size > KEEP_WINDOWS) {
      const starts = [...state.windows.keys()].sort((a, b) => a - b);
      for (const s of starts.slice(0, starts.length - KEEP_WINDOWS)) state.windows.delete(s);
    }
  }

  function onTrending(t) {
    if (t && Array.isArray(t.items)) state.trending = t;
  }

  function sessionKey(s) { return s.user_id + '\u0000' + s.start; }

  function onSessionEnd(s, countIt) {
    if (!s || typeof s !== 'object') return;
    const key = sessionKey(s);
    const i = state.sessions.findIndex((x) => sessionKey(x) === key);
    if (i >= 0) state.sessions.splice(i, 1);   // a revision replaces the earlier firing
    state.sessions.unshift(s);
    if (state.sessions.length > KEEP_SESSIONS) state.sessions.length = KEEP_SESSIONS;
    if (isNum(s.duration_ms)) {
      state.durations.push(s.duration_ms);
      if (state.durations.length > MEAN_OVER) state.durations.shift();
    }
    if (countIt) state.sessionsEnded++;
  }

  function onLate(list) {
    if (!Array.isArray(list)) return;
    for (const e of list) if (e && typeof e === 'object') state.late.unshift(e);
    if (state.late.length > KEEP_LATE) state.late.length = KEEP_LATE;
  }

  /* ---- rendering (coalesced to one pass per animation frame) ---------- */

  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      render();
    });
  }

  function render() {
    renderStats();
    renderWindows();
    renderTrending();
    renderSessions();
    renderLate();
    setText('updated', new Date().toLocaleTimeString());
  }

  function renderStats() {
    const s = state.stats;
    if (rateChart) rateChart.setData([state.rateX, state.rateY]);
    const lastRate = state.rateY.length ? state.rateY[state.rateY.length - 1] : null;
    setText('kpi-rate', isNum(lastRate) ? nf1.format(lastRate) : '–');
    if (!s) return;
    setText('kpi-accepted', fmtCount(s.accepted));
    setText('kpi-sessions', fmtCount(s.open_sessions));
    setText('sess-open', fmtCount(s.open_sessions));
    setText('kpi-windows', fmtCount(s.open_windows));
    setText('kpi-duplicates', fmtCount(s.duplicates));
    setText('kpi-late', fmtCount(s.late_dropped));
    setText('kpi-lag', isTime(s.watermark) ? fmtDuration(s.lag_ms) : '–');
    setText('kpi-clients', fmtCount(s.ws_clients));
    setText('wm', fmtTime(s.watermark));
    setText('clock', fmtTime(s.event_clock));
    setText('lag', isTime(s.watermark) ? fmtDuration(s.lag_ms) : '–');
    setText('rejected', fmtCount(s.rejected));
    setText('late-updates', fmtCount(s.late_updates));
    setText('ws-dropped', fmtCount(s.ws_dropped));
    renderShards(Array.isArray(s.queue_depth) ? s.queue_depth : []);
  }

  function renderShards(depths) {
    const box = $('shards');
    if (depths.length === 0) {
      box.replaceChildren(el('span', 'muted', '–'));
      return;
    }
    const max = Math.max(64, ...depths.filter(isNum));
    const frag = document.createDocumentFragment();
    depths.forEach((d, i) => {
      const row = el('div', 'shard');
      row.appendChild(el('span', 'muted', 'shard ' + i));
      const track = el('div', 'track');
      const fill = el('div', 'fill');
      const frac = isNum(d) ? Math.min(1, d / max) : 0;
      fill.style.width = (frac * 100).toFixed(1) + '%';
      if (frac > 0.5) fill.classList.add('hot');
      track.appendChild(fill);
      row.appendChild(track);
      row.appendChild(el('span', 'n', fmtCount(d)));
      frag.appendChild(row);
    });
    box.replaceChildren(frag);
  }

  /* The current window is the newest one still open; the last closed one is
   * the newest fired window before it. */
  function pickWindows() {
    const ws = [...state.windows.values()].sort((a, b) => b.start - a.start);
    const current = ws.find((w) => !w.closed) || null;
    const closed = ws.find((w) => w.closed && (!current || w.start < current.start)) || null;
    return { current, closed };
  }

  function renderWindows() {
    const { current, closed } = pickWindows();
    const cur = current ? current.pages : new Map();
    const last = closed ? closed.pages : new Map();
    const pages = new Map();
    for (const [p, v] of cur) pages.set(p, { cur: v.count, users: v.users, last: 0 });
    for (const [p, v] of last) {
      const e = pages.get(p);
      if (e) e.last = v.count;
      else pages.set(p, { cur: 0, users: 0, last: v.count });
    }
    const top = [...pages.entries()]
      .sort((a, b) => b[1].cur - a[1].cur || b[1].last - a[1].last || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .slice(0, TOP_PAGES);

    let note = 'tumbling windows: waiting for data';
    if (current || closed) {
      const parts = [];
      if (current) parts.push('current ' + fmtClock(current.start) + '–' + fmtClock(current.end));
      if (closed) parts.push('last closed ' + fmtClock(closed.start) + '–' + fmtClock(closed.end));
      note = 'tumbling windows (UTC): ' + parts.join(' · ');
    }
    setText('window-note', note);

    pageLabels = top.map(([p]) => p);
    if (pagesChart) {
      pagesChart.setData([
        top.map((_, i) => i),
        top.map(([, v]) => v.cur),
        top.map(([, v]) => v.last),
      ]);
    }
    const rows = top.map(([p, v]) => {
      const tr = el('tr');
      tr.appendChild(cell(p, 'page', p));
      tr.appendChild(cell(fmtCount(v.cur), 'num'));
      tr.appendChild(cell(current ? fmtCount(v.users) : '–', 'num'));
      tr.appendChild(cell(closed ? fmtCount(v.last) : '–', 'num'));
      return tr;
    });
    fillTable('pages-table', rows, 'no clicks in the current or last window', 4);
  }

  function renderTrending() {
    const t = state.trending;
    const items = t ? t.items.filter((x) => x && typeof x.page_url === 'string') : [];
    const max = items.reduce((m, x) => Math.max(m, isNum(x.score) ? x.score : 0), 0) || 1;
    const rows = items.map((x, i) => {
      const tr = el('tr');
      tr.appendChild(cell(i + 1, 'num'));
      tr.appendChild(cell(x.page_url, 'page', x.page_url));
      tr.appendChild(cell(isNum(x.score) ? nf2.format(x.score) : '–', 'num'));
      const barTd = el('td', 'barcol');
      const bar = el('div', 'bar');
      bar.style.width = ((isNum(x.score) ? x.score / max : 0) * 100).toFixed(1) + '%';
      barTd.appendChild(bar);
      tr.appendChild(barTd);
      return tr;
    });
    fillTable('trending-table', rows, 'no clicks yet', 4);
    if (t && isNum(t.half_life_ms)) {
      setText('trending-note', 'decayed click score · half-life ' + fmtDuration(t.half_life_ms) +
        (isTime(t.as_of) ? ' · as of ' + fmtClock(t.as_of) : ''));
    }
  }

  function renderSessions() {
    setText('sess-ended', fmtCount(state.sessionsEnded));
    const d = state.durations;
    setText('sess-mean', d.length ? fmtDuration(d.reduce((a, b) => a + b, 0) / d.length) : '–');
    const rows = state.sessions.map((s) => {
      const tr = el('tr');
      tr.appendChild(cell(s.user_id, 'page', s.user_id));
      tr.appendChild(cell(fmtDuration(s.duration_ms), 'num'));
      tr.appendChild(cell(fmtCount(s.page_views), 'num'));
      const path = String(s.entry_page ?? '') + ' → ' + String(s.exit_page ?? '');
      tr.appendChild(cell(path, 'page', path));
      return tr;
    });
    fillTable('sessions-table', rows, 'no session has ended yet', 4);
  }

  function renderLate() {
    const rows = state.late.map((e) => {
      const tr = el('tr');
      tr.appendChild(cell(fmtClock(e.timestamp), null, fmtTime(e.timestamp)));
      tr.appendChild(cell(e.page_url, 'page', e.page_url));
      tr.appendChild(cell(e.user_id, 'page', e.user_id));
      tr.appendChild(cell(e.reason, null, e.reason));
      return tr;
    });
    fillTable('late-table', rows, 'none', 4);
  }

  /* ---- REST ------------------------------------------------------------ */

  async function getJSON(path) {
    const headers = token ? { Authorization: 'Bearer ' + token } : {};
    const r = await fetch(path, { headers, cache: 'no-store' });
    if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
    return r.json();
  }

  /* Seeds the panels from REST so a fresh page is not empty until the next
   * push. Each part is independent: one failing leaves the others. */
  async function seed() {
    const jobs = [
      getJSON('/api/v1/stats').then(onStats),
      getJSON('/api/v1/trending?n=10').then(onTrending),
      getJSON('/api/v1/windows?type=tumbling&state=closed&limit=2000').then((j) => onWindows(j.items)),
      getJSON('/api/v1/windows?type=tumbling&state=open&limit=2000').then((j) => onWindows(j.items)),
      getJSON('/api/v1/sessions?limit=' + KEEP_SESSIONS).then((j) => {
        if (Array.isArray(j.items)) j.items.slice().reverse().forEach((s) => onSessionEnd(s, false));
      }),
      getJSON('/api/v1/late?limit=' + KEEP_LATE).then((j) => {
        if (Array.isArray(j.items)) onLate(j.items.slice().reverse());
      }),
    ];
    const results = await Promise.allSettled(jobs);
    for (const r of results) if (r.status === 'rejected') console.warn('clickflow: seeding failed:', r.reason);
    scheduleRender();
  }

  /* ---- WebSocket ------------------------------------------------------- */

  let ws = null;
  let everConnected = false;
  let backoff = BACKOFF_MIN_MS;
  let retryTimer = null;

  function setStatus(kind, detail) {
    const s = $('conn-status');
    s.dataset.state = kind;
    s.textContent = kind === 'connecting' ? 'connecting…' : kind;
    setText('conn-detail', detail || '');
    document.body.classList.toggle('offline', kind === 'disconnected');
  }

  async function wsUrl() {
    let url;
    if (wsOverride) {
      url = new URL(wsOverride, window.location.href);
    } else {
      const info = await getJSON('/api/v1/info');
      const port = Number(info.ws_port);
      if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error('bad ws_port in /api/v1/info');
      const path = typeof info.ws_path === 'string' && info.ws_path.startsWith('/') ? info.ws_path : '/';
      const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
      const host = window.location.hostname.includes(':') ? '[' + window.location.hostname + ']'
        : window.location.hostname;
      url = new URL(scheme + '//' + host + ':' + port + path);
    }
    if (token) url.searchParams.set('token', token);
    return url;
  }

  function scheduleReconnect(reason) {
    if (retryTimer) return;
    const delay = Math.round(backoff * (0.8 + Math.random() * 0.4));
    backoff = Math.min(BACKOFF_MAX_MS, backoff * 2);
    setStatus('disconnected', (reason ? reason + ' · ' : '') + 'retrying in ' + fmtDuration(delay));
    retryTimer = setTimeout(() => {
      retryTimer = null;
      connect();
    }, delay);
  }

  async function connect() {
    setStatus('connecting', '');
    let url;
    try {
      url = await wsUrl();
    } catch (e) {
      scheduleReconnect('server unreachable');
      return;
    }
    const shown = new URL(url.href);
    if (shown.searchParams.has('token')) shown.searchParams.set('token', '…');
    setText('footer-ws', 'live updates from ' + shown.href);
    let sock;
    try {
      sock = new WebSocket(url.href);
    } catch (e) {
      scheduleReconnect('bad WebSocket URL');
      return;
    }
    ws = sock;
    let opened = false;
    sock.onopen = () => {
      opened = true;
      backoff = BACKOFF_MIN_MS;
      state.lastAccepted = null;   // the server may have restarted
      setStatus('connected', '');
      sock.send(JSON.stringify({ subscribe: subscribeTopics() }));
      if (everConnected) seed();   // catch up on what happened while we were away
      everConnected = true;
    };
    sock.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (!msg || typeof msg !== 'object') return;
      switch (msg.type) {
        case 'windows': onWindows(msg.data); break;
        case 'trending': onTrending(msg.data); break;
        case 'session_end':
          // One record, or a batch of them.
          for (const rec of Array.isArray(msg.data) ? msg.data : [msg.data]) onSessionEnd(rec, true);
          break;
        case 'stats': onStats(msg.data); break;
        case 'late': onLate(msg.data); break;
        case 'subscribed': onSubscribed(msg.data); return;
        case 'view': onViewPush(msg); return;
        default: return;   // e.g. "subscribed"
      }
      scheduleRender();
    };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      scheduleReconnect(opened ? 'connection closed' + (ev.code ? ' (' + ev.code + ')' : '') : 'cannot connect');
    };
    sock.onerror = () => { /* onclose follows and reconnects */ };
  }

  /* ---- top-N panels (built-in views panel_*, SPEC 15) -------------------- */

  /* Each panel is one running view: a row per dimension value with its
   * event count and distinct visitors. Rows are keyed by the value, so a
   * push replaces the row a pull gave. */
  const PANEL_TOP = 10;
  const PANELS_REFRESH_MS = 15000;
  const PANELS = [
    { id: 'panel-referrers', view: 'panel_referrers', col: 'referrer' },
    { id: 'panel-utm', view: 'panel_utm_sources', col: 'utm_source' },
    { id: 'panel-browsers', view: 'panel_browsers', col: 'browser' },
    { id: 'panel-devices', view: 'panel_devices', col: 'device' },
    { id: 'panel-countries', view: 'panel_countries', col: 'country' },
  ].map((p) => Object.assign(p, { rows: new Map() }));
  const panelByView = new Map(PANELS.map((p) => [p.view, p]));

  function onPanelRows(p, rows, replace) {
    if (!Array.isArray(rows)) return;
    if (replace) p.rows = new Map();
    for (const r of rows) {
      if (!r || typeof r !== 'object' || typeof r[p.col] !== 'string' || !isNum(r.count)) continue;
      p.rows.set(r[p.col], r);
    }
    renderPanel(p);
  }

  function renderPanel(p) {
    const top = [...p.rows.values()].sort((a, b) => b.count - a.count ||
      (a[p.col] < b[p.col] ? -1 : a[p.col] > b[p.col] ? 1 : 0)).slice(0, PANEL_TOP);
    const max = top.reduce((m, r) => Math.max(m, r.count), 0) || 1;
    const trs = top.map((r, i) => {
      const tr = el('tr');
      tr.dataset.value = r[p.col];
      tr.appendChild(cell(i + 1, 'num'));
      // The value is the visitor's own text (a referrer host, a UTM tag):
      // textContent only.
      tr.appendChild(cell(r[p.col], 'page', r[p.col]));
      tr.appendChild(cell(fmtCount(r.count), 'num count'));
      tr.appendChild(cell(fmtCount(r.visitors), 'num visitors'));
      const barTd = el('td', 'barcol');
      const bar = el('div', 'bar');
      bar.style.width = (r.count / max * 100).toFixed(1) + '%';
      barTd.appendChild(bar);
      tr.appendChild(barTd);
      return tr;
    });
    fillTable(p.id + '-table', trs, 'no events yet', 5);
  }

  async function pullPanel(p) {
    try {
      const headers = { 'Content-Type': 'text/plain' };
      if (token) headers.Authorization = 'Bearer ' + token;
      const r = await fetch('/api/v1/query', { method: 'POST', headers, cache: 'no-store',
        body: 'SELECT * FROM ' + p.view });
      const j = await r.json();
      if (!r.ok) throw new Error(typeof j.error === 'string' ? j.error : 'HTTP ' + r.status);
      onPanelRows(p, j.items, true);
      $(p.id).dataset.live = 'true';
    } catch (e) {
      fillTable(p.id + '-table', [], 'unavailable: ' + e.message, 5);
    }
  }

  function pullPanels() { for (const p of PANELS) pullPanel(p); }

  /* ---- user views (GET /api/v1/views, pull query, view:NAME pushes) ----- */

  /* Selecting a view subscribes to its topic first and pulls its rows once
   * the server confirms, so no push falls between the pull and the
   * subscription. Rows are merged by (window, group): the group is the
   * columns named in the view's GROUP BY text plus its non-numeric columns
   * (an aliased numeric GROUP BY column is not recognised; such a view
   * shows one row per revision instead of one per group). */
  const VIEW_ROWS_SHOWN = 50;
  const VIEW_KEEP_WINDOWS = 6;      // windows remembered per selected view
  const VIEWS_REFRESH_MS = 15000;
  const WINDOW_COLS = new Set(['WINDOWSTART', 'WINDOWEND', 'revision', 'final']);

  const vstate = {
    list: [],                       // GET /api/v1/views items
    selected: null,                 // the selected view's definition
    keyCols: [],
    countCol: null,                 // the bar chart's column, windowed views only
    rows: new Map(),                // group key -> row
    seq: 0,                         // answers for an older selection are dropped
  };

  function quoteIdent(name) { return '"' + String(name).replace(/"/g, '""') + '"'; }

  function viewKeyCols(v) {
    const named = new Set(String(v.keys || '').split(',').map((s) => s.trim()).filter(Boolean));
    return v.columns.filter((c) => !WINDOW_COLS.has(c.name) &&
      (named.has(c.name) || c.type === 'STRING' || c.type === 'BOOLEAN')).map((c) => c.name);
  }

  function viewCountCol(v, keyCols) {
    if (!v.windowed) return null;
    const c = v.columns.find((x) => (x.type === 'BIGINT' || x.type === 'DOUBLE') &&
      !WINDOW_COLS.has(x.name) && !keyCols.includes(x.name));
    return c ? c.name : null;
  }

  function groupOf(row) { return vstate.keyCols.map((k) => JSON.stringify(row[k] ?? null)).join('\u0000'); }

  function rowKey(row) {
    const w = vstate.selected && vstate.selected.windowed ? row.WINDOWSTART + ':' + row.WINDOWEND + '\u0000' : '';
    return w + groupOf(row);
  }

  function onViewRows(rows) {
    if (!Array.isArray(rows)) return;
    for (const r of rows) {
      if (!r || typeof r !== 'object') continue;
      const k = rowKey(r);
      const old = vstate.rows.get(k);
      // A push older than what a pull already gave (same window) is dropped.
      if (old && isNum(old.revision) && isNum(r.revision) && r.revision < old.revision) continue;
      vstate.rows.set(k, r);
    }
    if (vstate.selected && vstate.selected.windowed) {
      const starts = [...new Set([...vstate.rows.values()].map((r) => r.WINDOWSTART))].sort((a, b) => b - a);
      const keep = new Set(starts.slice(0, VIEW_KEEP_WINDOWS));
      for (const [k, r] of vstate.rows) if (!keep.has(r.WINDOWSTART)) vstate.rows.delete(k);
    }
  }

  function fmtViewValue(v, type) {
    if (v === null || v === undefined) return 'NULL';
    if (type === 'TIMESTAMP' && isTime(v)) return fmtTime(v);
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  function renderViewList() {
    const rows = vstate.list.map((v) => {
      const tr = el('tr', vstate.selected && vstate.selected.name === v.name ? 'selected' : null);
      const td = el('td');
      const b = el('button', 'view-pick', v.name);
      b.type = 'button';
      b.dataset.view = v.name;
      td.appendChild(b);
      tr.appendChild(td);
      const sql = el('td', 'sql');
      sql.appendChild(el('code', null, v.sql));
      tr.appendChild(sql);
      return tr;
    });
    fillTable('views-list', rows, 'no views yet (CREATE VIEW ... over POST /api/v1/sql)', 2);
  }

  function renderView() {
    const v = vstate.selected;
    $('view-detail').hidden = !v;
    if (!v) return;
    setText('view-title', v.name + (v.windowed ? ' · windowed' : ' · running'));
    const cols = v.columns;
    const head = $('view-table').tHead.rows[0];
    head.replaceChildren(...cols.map((c) => el('th', c.type === 'BIGINT' || c.type === 'DOUBLE' ? 'num' : null, c.name)));
    const all = [...vstate.rows.values()];
    all.sort((a, b) => (b.WINDOWSTART ?? 0) - (a.WINDOWSTART ?? 0) || (groupOf(a) < groupOf(b) ? -1 : groupOf(a) > groupOf(b) ? 1 : 0));
    const trs = all.slice(0, VIEW_ROWS_SHOWN).map((r) => {
      const tr = el('tr');
      tr.dataset.group = vstate.keyCols.map((k) => fmtViewValue(r[k])).join(' · ');
      for (const c of cols) {
        const td = cell(fmtViewValue(r[c.name], c.type), c.type === 'BIGINT' || c.type === 'DOUBLE' ? 'num' : null);
        td.dataset.col = c.name;
        tr.appendChild(td);
      }
      return tr;
    });
    fillTable('view-table', trs, 'no rows yet', cols.length);

    // Bars: the newest window, one bar per group.
    const bars = $('view-bars');
    bars.hidden = !vstate.countCol;
    if (!vstate.countCol) return;
    const latest = all.reduce((m, r) => (isNum(r.WINDOWSTART) && r.WINDOWSTART > m ? r.WINDOWSTART : m), -Infinity);
    const inWin = all.filter((r) => r.WINDOWSTART === latest && isNum(r[vstate.countCol]))
      .sort((a, b) => b[vstate.countCol] - a[vstate.countCol]).slice(0, TOP_PAGES);
    const max = inWin.reduce((m, r) => Math.max(m, r[vstate.countCol]), 0) || 1;
    bars.replaceChildren(...inWin.map((r) => {
      const label = vstate.keyCols.map((k) => fmtViewValue(r[k])).join(' · ');
      const row = el('div', 'vbar-row');
      row.dataset.group = label;
      row.appendChild(el('span', 'vbar-label', label));
      const track = el('span', 'vbar-track');
      const fill = el('span', 'vbar-fill');
      fill.style.display = 'block';
      fill.style.width = (Math.max(0, r[vstate.countCol]) / max * 100).toFixed(1) + '%';
      track.appendChild(fill);
      row.appendChild(track);
      row.appendChild(el('span', 'vbar-value', String(r[vstate.countCol])));
      return row;
    }));
    if (isTime(latest)) setText('views-note', vstate.countCol + ' per group, window from ' + fmtClock(latest));
  }

  async function loadViews() {
    try {
      const j = await getJSON('/api/v1/views');
      vstate.list = Array.isArray(j.items)
        // The built-in views have their own panels above: only the user's
        // views are listed.
        ? j.items.filter((x) => x && x.builtin !== true && typeof x.name === 'string' && Array.isArray(x.columns)) : [];
    } catch (e) {
      fillTable('views-list', [], 'views unavailable: ' + e.message, 2);
      return;
    }
    if (vstate.selected) {
      const now = vstate.list.find((x) => x.name === vstate.selected.name);
      if (!now) selectView(null);   // dropped
    }
    renderViewList();
  }

  function subscribeTopics() {
    const t = ['windows', 'trending', 'sessions', 'stats', 'late'].concat(PANELS.map((p) => 'view:' + p.view));
    if (vstate.selected) t.push('view:' + vstate.selected.name);
    return t;
  }

  function selectView(name) {
    const v = name === null ? null : vstate.list.find((x) => x.name === name) || null;
    vstate.seq++;
    vstate.selected = v;
    vstate.rows = new Map();
    vstate.keyCols = v ? viewKeyCols(v) : [];
    vstate.countCol = v ? viewCountCol(v, vstate.keyCols) : null;
    delete $('views').dataset.live;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ subscribe: subscribeTopics() }));
    renderViewList();
    renderView();
  }

  /* The server confirmed the topics: pull the selected view's rows now. */
  async function onSubscribed(topics) {
    // The panels' pushes flow from now on: pull them once to start from.
    if (Array.isArray(topics) && topics.includes('view:' + PANELS[0].view)) pullPanels();
    const v = vstate.selected;
    if (!v || !Array.isArray(topics) || !topics.includes('view:' + v.name)) return;
    const seq = vstate.seq;
    try {
      const headers = { 'Content-Type': 'text/plain' };
      if (token) headers.Authorization = 'Bearer ' + token;
      const r = await fetch('/api/v1/query', { method: 'POST', headers, cache: 'no-store',
        body: 'SELECT * FROM ' + quoteIdent(v.name) });
      const j = await r.json();
      if (seq !== vstate.seq) return;
      if (!r.ok) throw new Error(typeof j.error === 'string' ? j.error : 'HTTP ' + r.status);
      onViewRows(j.items);
      $('views').dataset.live = v.name;
    } catch (e) {
      if (seq === vstate.seq) setText('views-note', 'cannot read ' + v.name + ': ' + e.message);
    }
    renderView();
  }

  function onViewPush(msg) {
    const p = panelByView.get(msg.name);
    if (p) onPanelRows(p, msg.data, false);
    if (!vstate.selected || msg.name !== vstate.selected.name) return;
    onViewRows(msg.data);
    renderView();
  }

  $('views-list').addEventListener('click', (ev) => {
    const b = ev.target.closest('button.view-pick');
    if (b) selectView(b.dataset.view);
  });

  /* ---- time ranges (history.db rollups) -------------------------------- */

  const HOUR_MS = 3600000;
  const DAY_MS = 24 * HOUR_MS;
  // Length, rollup step and words of each past range. Hourly steps while a
  // range has at most 168 of them; 30 days by day.
  const RANGES = {
    '1h': { len: HOUR_MS, step: '1h', stepMs: HOUR_MS, words: 'hour' },
    '1d': { len: DAY_MS, step: '1h', stepMs: HOUR_MS, words: 'day' },
    '7d': { len: 7 * DAY_MS, step: '1h', stepMs: HOUR_MS, words: '7 days' },
    '30d': { len: 30 * DAY_MS, step: '1d', stepMs: DAY_MS, words: '30 days' },
  };
  const HIST_REFRESH_MS = 60000;

  let range = RANGES[params.get('range')] ? params.get('range') : 'live';
  let histChart = null;
  let histTimer = null;
  let histSeq = 0;                  // answers of an older selection are dropped

  function rollup(view, from, to, step) {
    return getJSON('/api/v1/views/' + view + '/rollup?from=' + from + '&to=' + to + '&step=' + step)
      .then((j) => (Array.isArray(j.items) ? j.items : []));
  }

  const sumOf = (items, field) => items.reduce((a, x) => a + (isNum(x[field]) ? x[field] : 0), 0);

  /* "+12%", "−5%", "±0%"; null when there is nothing to compare with. */
  function fmtChange(cur, prev) {
    if (!isNum(cur) || !isNum(prev) || prev === 0) return null;
    const pct = Math.round((cur - prev) * 100 / prev);
    return (pct > 0 ? '+' : pct < 0 ? '−' : '±') + Math.abs(pct) + '%';
  }

  function makeHistChart() {
    if (typeof uPlot !== 'function' || histChart) return;
    const bars = uPlot.paths && uPlot.paths.bars;
    histChart = new uPlot({
      width: chartWidth('chart-hist'),
      height: 240,
      cursor: { drag: { x: false, y: false } },
      legend: { show: true, live: false },
      // Steps are UTC hours and days: label them in UTC too.
      tzDate: (ts) => (uPlot.tzDate ? uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC') : new Date(ts * 1000)),
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(5, max * 1.15)] } },
      series: [
        {},
        {
          label: 'clicks',
          stroke: '#4fb3ff',
          fill: 'rgba(79,179,255,0.6)',
          width: 0,
          points: { show: false },
          paths: bars ? bars({ size: [0.7, 40] }) : undefined,
        },
        { label: 'unique users', stroke: '#b48cff', width: 2, points: { show: false } },
      ],
      axes: [
        Object.assign({}, axisStyle, { space: 80 }),
        Object.assign({}, axisStyle, { size: 56, values: (u, vals) => vals.map((v) => nf.format(v)) }),
      ],
    }, [[], [], []], $('chart-hist'));
    if (typeof ResizeObserver === 'function') {
      new ResizeObserver(() => histChart.setSize({ width: chartWidth('chart-hist'), height: 240 }))
        .observe($('chart-hist'));
    }
  }

  async function loadHistory() {
    const r = RANGES[range];
    if (!r) return;
    const seq = ++histSeq;
    const to = Date.now();
    const from = to - r.len;
    setText('hist-title', 'Last ' + r.words);
    setText('hist-prev-label', 'previous ' + r.words);
    setText('hist-note', 'loading…');
    try {
      const [cur, prev, sess] = await Promise.all([
        rollup('tumbling', from, to, r.step),
        rollup('tumbling', from - r.len, from, r.step),
        rollup('sessions', from, to, r.step),
      ]);
      if (seq !== histSeq) return;
      const clicks = sumOf(cur, 'count');
      const before = sumOf(prev, 'count');
      setText('hist-clicks', fmtCount(clicks));
      setText('hist-prev', fmtCount(before));
      const change = fmtChange(clicks, before);
      setText('hist-change', change ? change + ' vs previous ' + r.words : 'no clicks in the previous ' + r.words);
      setText('hist-pv', fmtCount(sumOf(sess, 'page_views')));
      setText('hist-note', 'closed tumbling windows, per ' + (r.stepMs === HOUR_MS ? 'hour' : 'day') + ' (UTC), ' +
        fmtTime(from) + ' – ' + fmtTime(to));
      makeHistChart();
      if (histChart) {
        // Every step of the range, empty ones as 0, so gaps show as gaps.
        const byStart = new Map(cur.filter((x) => isNum(x.start)).map((x) => [x.start, x]));
        const xs = [], ys = [], us = [];
        for (let t = Math.floor(from / r.stepMs) * r.stepMs; t < to; t += r.stepMs) {
          const x = byStart.get(t);
          xs.push(t / 1000);
          ys.push(x && isNum(x.count) ? x.count : 0);
          us.push(x && isNum(x.unique_users) ? x.unique_users : 0);
        }
        histChart.setData([xs, ys, us]);
      }
    } catch (e) {
      if (seq !== histSeq) return;
      setText('hist-note', 'history unavailable: ' + e.message);
      for (const id of ['hist-clicks', 'hist-prev', 'hist-change', 'hist-pv']) setText(id, '–');
    }
  }

  function setRange(next) {
    range = RANGES[next] ? next : 'live';
    document.body.dataset.range = range;
    for (const b of $('range').querySelectorAll('button')) {
      b.setAttribute('aria-pressed', String(b.dataset.range === range));
    }
    $('history').hidden = range === 'live';
    clearInterval(histTimer);
    histTimer = null;
    histSeq++;                      // a load still in flight is for another range
    if (range !== 'live') {
      loadHistory();
      histTimer = setInterval(loadHistory, HIST_REFRESH_MS);
    } else {
      scheduleRender();
    }
  }

  $('range').addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-range]');
    if (b) setRange(b.dataset.range);
  });

  /* ---- tracking snippet (GET /api/v1/sites) ----------------------------- */

  /* The key goes into an HTML attribute of the line the user pastes, so it
   * is escaped for HTML there; the line itself is shown as text. */
  function attrEscape(s) {
    return String(s).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }

  function snippetLine(key) {
    return '<script defer src="' + attrEscape(window.location.origin + '/cf.js') + '" data-site="' +
      attrEscape(key) + '"></script>';
  }

  async function loadSites() {
    let items;
    try {
      const j = await getJSON('/api/v1/sites');
      items = Array.isArray(j.items) ? j.items.filter((x) => x && typeof x.key === 'string') : [];
    } catch (e) {
      fillTable('snippet-table', [], 'site keys unavailable: ' + e.message, 3);
      return;
    }
    const rows = items.map((x) => {
      const tr = el('tr');
      tr.appendChild(cell(x.key, 'page', x.key));
      const origins = Array.isArray(x.origins) ? x.origins.map(String).join(', ') : '';
      tr.appendChild(cell(origins || 'server-side only', 'page', origins));
      const td = el('td', 'snippet');
      td.appendChild(el('code', null, snippetLine(x.key)));
      tr.appendChild(td);
      return tr;
    });
    fillTable('snippet-table', rows, 'no site keys configured (--site KEY=ORIGIN)', 3);
  }

  /* ---- start ----------------------------------------------------------- */

  makeCharts();
  render();
  setRange(range);
  seed();
  loadSites();
  loadViews();
  setInterval(loadViews, VIEWS_REFRESH_MS);
  setInterval(pullPanels, PANELS_REFRESH_MS);
  connect();
})();
