/* clickflow tracker (SPEC 15; docs/INGEST.md). No dependencies, no cookie,
 * no storage. <script defer src="https://HOST/cf.js" data-site="KEY"></script>
 * Sends to HOST's /api/v1/events: a pageview on load and on history
 * navigation, clickflow(name, props) events, clicks on [data-cf-event]
 * (data-cf-prop-x="y" adds props) and on outbound links. */
(function (w, d) {
  'use strict';
  var s = d.currentScript, q = w.clickflow;
  if (!s || (q && q.cf)) return;            // no src to send to, or loaded twice
  var api = new URL(s.src, location.href).origin + '/api/v1/events';
  var site = s.getAttribute('data-site') || undefined;
  var last;

  function send(name, props) {
    var e = { name: name, page_url: location.href, site: site };
    if (d.referrer) e.referrer = d.referrer;
    if (props) e.properties = props;
    var body = JSON.stringify(e);
    try {
      // sendBeacon posts text/plain, needs no CORS preflight and survives
      // leaving the page; it returns false when the browser refuses.
      if (navigator.sendBeacon && navigator.sendBeacon(api, body)) return;
    } catch (x) { /* fall through */ }
    if (w.fetch) {
      fetch(api, { method: 'POST', body: body, keepalive: true, mode: 'no-cors', credentials: 'omit',
        headers: { 'Content-Type': 'text/plain' } }).catch(function () {});
    }
  }

  // One pageview per URL: replaceState calls that keep the path and query,
  // and hash changes, are not new pages.
  function page() {
    var u = location.href.split('#')[0];
    if (u === last) return;
    last = u;
    send('pageview');
  }

  function track(name, props) {
    if (typeof name === 'string' && name) send(name, props && typeof props === 'object' ? props : undefined);
  }
  track.cf = 1;
  w.clickflow = track;
  // Calls made before this script ran: clickflow.q = [[name, props], ...].
  if (q && q.q) for (var i = 0; i < q.q.length; i++) track.apply(null, q.q[i]);

  var h = w.history;
  ['pushState', 'replaceState'].forEach(function (m) {
    var orig = h && h[m];
    if (orig) h[m] = function () { var r = orig.apply(this, arguments); page(); return r; };
  });
  w.addEventListener('popstate', page);

  function click(ev) {
    var t = ev.target, el = t && t.closest && t.closest('[data-cf-event]');
    if (el) {
      var props, a = el.attributes;
      for (var j = 0; j < a.length; j++) {
        if (a[j].name.indexOf('data-cf-prop-') === 0) (props = props || {})[a[j].name.slice(13)] = a[j].value;
      }
      track(el.getAttribute('data-cf-event'), props);
      return;
    }
    var l = t && t.closest && t.closest('a[href]');
    if (l && /^https?:$/.test(l.protocol) && l.host !== location.host) send('outbound', { url: l.href });
  }
  // Capture phase: a page's own handlers cannot stop it; auxclick counts
  // middle-clicks (a link opened in a new tab).
  d.addEventListener('click', click, true);
  d.addEventListener('auxclick', function (ev) { if (ev.button === 1) click(ev); }, true);

  if (d.visibilityState === 'prerender') {
    d.addEventListener('visibilitychange', function v() {
      if (d.visibilityState !== 'prerender') { d.removeEventListener('visibilitychange', v); page(); }
    });
  } else {
    page();
  }
})(window, document);
