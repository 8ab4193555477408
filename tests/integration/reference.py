"""Brute-force reference model of SPEC sections 1, 4, 5, 6 and 7 in replay
mode (--idle-timeout 0: results depend on the data alone). Plain Python,
clarity over speed: every rule is written the way the SPEC states it, with
no incremental data structure that could share a bug with the server.

Feed it what a client sends, in order:

    ref = Reference(Settings(window_ms=10_000, ...))
    accepted, duplicates, rejected = ref.request(events)   # one POST /api/v1/events
    ref.raise_watermark(ms)                                 # one POST /api/v1/watermark

and ask it what the REST answers must be: windows(), sessions(),
user_sessions(), late(), trending(), stats().

Events are dicts with explicit integer `ts` (epoch ms), `user_id`,
`page_url`, optional `event_id`; an event with `invalid` set stands for one
the server rejects (it only counts in `rejected`).

Timing rules that are easy to get wrong, written down once:
- Dedup (SPEC 6) judges an event_id at the event-time clock C *before* the
  event itself is observed: C = max accepted ts so far (earlier events of the
  same request included). A recorded id is a duplicate while
  C < first_ts + dedup_ttl. An id whose ts + ttl <= C is accepted and not
  remembered (it would already be forgotten).
- W advances per event, also inside one request (SPEC 1): every event is
  judged (windows, sessions) against the W left by the events before it, and
  windows and sessions whose end W passed fire before it is applied. So how
  a client splits the events into requests does not matter.
- W = max(previous W, raise floor, C - out_of_orderness); it moves (and fires
  windows and sessions) before each accepted event, after each request and
  at each watermark POST.
"""
import math
from dataclasses import dataclass

TUMBLING = "tumbling"
SLIDING = "sliding"
TYPE_ORDER = {TUMBLING: 0, SLIDING: 1}
LATE_REASON = "all windows of the event are past allowed lateness"


@dataclass
class Settings:
    window_ms: int = 60_000
    slide_size_ms: int = 300_000
    slide_ms: int = 60_000
    session_gap_ms: int = 1_800_000
    allowed_lateness_ms: int = 60_000
    out_of_orderness_ms: int = 5_000
    half_life_ms: int = 60_000
    dedup_ttl_ms: int = 600_000


def utf8_key(s):
    """Bytewise order of the UTF-8 encoding, as the server sorts."""
    return s.encode("utf-8")


class _Pair:
    """State of one (window type, window start, page_url)."""
    __slots__ = ("count", "users", "revision", "fired")

    def __init__(self):
        self.count = 0
        self.users = set()
        self.revision = 0
        self.fired = False


class _Session:
    __slots__ = ("first", "last", "views", "pages", "entry", "exit", "fired", "emitted")

    def __init__(self, ts, page):
        self.first = ts
        self.last = ts
        self.views = 1
        self.pages = {page}
        self.entry = page
        self.exit = page
        self.fired = False
        self.emitted = None     # highest revision emitted so far, None if never

    def next_revision(self):
        return 0 if self.emitted is None else self.emitted + 1


class Reference:
    def __init__(self, settings):
        self.s = settings
        self.max_ts = None          # C (replay mode: max accepted ts)
        self.w = None               # W of the sequencer
        self.floor = None           # POST /api/v1/watermark floor
        self.op_w = None            # W of the last marker: what operators judge by
        self.markers = 0
        self.dedup = {}             # event_id -> expiry (first_ts + ttl)
        self.seen_ids = set()       # every event_id accepted once
        self.reaccepted_ids = 0     # accepted again after the TTL
        self.accepted = 0
        self.duplicates = 0
        self.rejected = 0
        self.seq = 0
        self.clicks = []            # (page_url, ts) of every accepted event: trending
        self.pairs = {}             # (type, start, page) -> _Pair
        self.closed = {}            # (type, start, page) -> newest final record
        self.window_emissions = []  # every final window record, in emission order
        self.late_events = []       # late side output, oldest first
        self.users = {}             # user_id -> [_Session] sorted by first
        self.session_emissions = []
        self.session_late_dropped = 0
        # Lowest page score at the end of any request: the server prunes
        # trending pages below 0.01 (only with more than 1024 pages per
        # shard); a trace whose minimum stays above 0.01 compares exactly.
        self.min_trending_score = math.inf

    # ---- windows (SPEC 4) ---------------------------------------------------

    def windows_of(self, ts):
        """[(type, start, end)] of every window the timestamp belongs to."""
        s = self.s
        out = []
        start = (ts // s.window_ms) * s.window_ms
        out.append((TUMBLING, start, start + s.window_ms))
        last = (ts // s.slide_ms) * s.slide_ms
        start = last - s.slide_size_ms + s.slide_ms
        while start <= last:
            if start <= ts < start + s.slide_size_ms:
                out.append((SLIDING, start, start + s.slide_size_ms))
            start += s.slide_ms
        return out

    def _fire_due(self, end, w):
        return w is not None and w >= end - 1

    def _purged(self, end, w):
        return w is not None and w >= end - 1 + self.s.allowed_lateness_ms

    def _window_record(self, key, pair, final):
        wtype, start, page = key
        size = self.s.window_ms if wtype == TUMBLING else self.s.slide_size_ms
        return {"type": wtype, "start": start, "end": start + size, "page_url": page,
                "count": pair.count, "unique_users": len(pair.users),
                "revision": pair.revision, "final": final}

    def _emit_window(self, key, pair):
        rec = self._window_record(key, pair, True)
        self.closed[key] = rec
        self.window_emissions.append(rec)

    def _window_add(self, ev):
        """Adds one accepted event to its windows; returns how many took it."""
        w = self.op_w
        added = 0
        for wtype, start, end in self.windows_of(ev["ts"]):
            if self._purged(end, w):
                continue    # past allowed lateness: this window no longer exists
            key = (wtype, start, ev["page_url"])
            pair = self.pairs.get(key)
            due = self._fire_due(end, w)
            if pair is None:
                # A page new to a window that already fired fires for the
                # first time (revision 0), as a new Flink pane would.
                pair = self.pairs[key] = _Pair()
            elif due:
                pair.revision += 1      # late update of a fired window
            pair.count += 1
            pair.users.add(ev["user_id"])
            added += 1
            if due:
                pair.fired = True
                self._emit_window(key, pair)
        return added

    def _windows_advance(self, w):
        due = [k for k, p in self.pairs.items()
               if not p.fired and self._fire_due(self._end(k), w)]
        due.sort(key=lambda k: (self._end(k), TYPE_ORDER[k[0]], utf8_key(k[2])))
        for k in due:
            p = self.pairs[k]
            p.fired = True
            self._emit_window(k, p)

    def _end(self, key):
        size = self.s.window_ms if key[0] == TUMBLING else self.s.slide_size_ms
        return key[1] + size

    # ---- sessions (SPEC 5) --------------------------------------------------

    def _session_record(self, user, x, final, revision):
        return {"user_id": user, "start": x.first, "end": x.last,
                "duration_ms": x.last - x.first, "page_views": x.views,
                "distinct_pages": len(x.pages), "entry_page": x.entry, "exit_page": x.exit,
                "revision": revision, "final": final}

    def _session_fire(self, user, x):
        rev = x.next_revision()
        x.emitted = rev
        x.fired = True
        self.session_emissions.append(self._session_record(user, x, True, rev))

    def _session_add(self, ev):
        g, lat, w = self.s.session_gap_ms, self.s.allowed_lateness_ms, self.op_w
        user, page, ts = ev["user_id"], ev["page_url"], ev["ts"]
        sessions = self.users.setdefault(user, [])
        # Session windows [ts, ts + gap) and [first, last + gap) touch.
        joined = [x for x in sessions if ts + g >= x.first and ts <= x.last + g]
        if not joined:
            if w is not None and w >= ts + g - 1 + lat:
                self.session_late_dropped += 1
                if not sessions:
                    del self.users[user]
                return
            x = _Session(ts, page)
            sessions.append(x)
            sessions.sort(key=lambda y: y.first)
            if w is not None and w >= x.last + g - 1:
                self._session_fire(user, x)
            return
        # Merge every joined session and the event into the earliest one.
        joined.sort(key=lambda y: y.first)
        a, z = joined[0], joined[-1]
        emitted = [x.emitted for x in joined if x.emitted is not None]
        m = _Session(a.first, a.entry)
        m.last, m.exit = z.last, z.exit
        m.views = sum(x.views for x in joined) + 1
        m.pages = set().union(*(x.pages for x in joined)) | {page}
        if ts < m.first:            # ties: the earlier-added entry stays
            m.first, m.entry = ts, page
        if ts >= m.last:            # ties: the later-added exit wins
            m.last, m.exit = ts, page
        m.emitted = max(emitted) if emitted else None
        for x in joined:
            sessions.remove(x)
        sessions.append(m)
        sessions.sort(key=lambda y: y.first)
        # A late event that joins a fired session (SPEC 5 read with SPEC 4 and
        # Flink's EventTimeTrigger): the merged session fires again at once
        # with revision + 1 if it is still due (W >= last_ts + gap - 1); if
        # the event moved its end past W, it is open again and fires with
        # revision + 1 when W gets there.
        if w is not None and w >= m.last + g - 1:
            self._session_fire(user, m)

    def _sessions_advance(self, w):
        g, lat = self.s.session_gap_ms, self.s.allowed_lateness_ms
        due = []
        for user, sessions in self.users.items():
            for x in sessions:
                if not x.fired and w >= x.last + g - 1:
                    due.append((x.last + g, utf8_key(user), user, x))
        due.sort(key=lambda t: t[:2])
        for _, _, user, x in due:
            self._session_fire(user, x)
        for user in list(self.users):
            kept = [x for x in self.users[user]
                    if not (x.fired and w >= x.last + g - 1 + lat)]
            if kept:
                self.users[user] = kept
            else:
                del self.users[user]

    # ---- dedup (SPEC 6) and the clock (SPEC 1) --------------------------------

    def _is_duplicate(self, ev):
        eid = ev.get("event_id")
        if eid is None:
            return False
        c = self.max_ts
        if c is not None:
            for k in [k for k, exp in self.dedup.items() if c >= exp]:
                del self.dedup[k]
        if eid in self.dedup:
            return True
        exp = ev["ts"] + self.s.dedup_ttl_ms
        if c is None or exp > c:
            self.dedup[eid] = exp
        if eid in self.seen_ids:
            self.reaccepted_ids += 1
        self.seen_ids.add(eid)
        return False

    def request(self, events):
        """One POST /api/v1/events that got 202. Returns (accepted,
        duplicates, rejected) as the response must report them."""
        acc = dup = rej = 0
        for ev in events:
            if ev.get("invalid"):
                rej += 1
                continue
            if self._is_duplicate(ev):
                dup += 1
                continue
            acc += 1
            self._advance(track_scores=False)     # the W the events before it left
            self.max_ts = ev["ts"] if self.max_ts is None else max(self.max_ts, ev["ts"])
            self.seq += 1
            self.clicks.append((ev["page_url"], ev["ts"]))
            if self._window_add(ev) == 0:
                self.late_events.append({
                    "page_url": ev["page_url"], "user_id": ev["user_id"],
                    "timestamp": ev["ts"], "event_id": ev.get("event_id"),
                    "reason": LATE_REASON})
            self._session_add(ev)
        self.accepted += acc
        self.duplicates += dup
        self.rejected += rej
        self._advance()
        return acc, dup, rej

    def raise_watermark(self, wm):
        """POST /api/v1/watermark; returns the W the answer must carry."""
        self.floor = wm if self.floor is None else max(self.floor, wm)
        self._advance()
        return self.w

    def _advance(self, track_scores=True):
        cands = [v for v in (self.w, self.floor) if v is not None]
        if self.max_ts is not None:
            cands.append(self.max_ts - self.s.out_of_orderness_ms)
        if not cands:
            return
        self.w = max(cands)
        if self.op_w is None or self.w > self.op_w:
            self.op_w = self.w
            self.markers += 1
            self._windows_advance(self.w)
            self._sessions_advance(self.w)
            if track_scores and self.max_ts is not None:
                scores = self._scores(self.max_ts)
                if scores:
                    self.min_trending_score = min(self.min_trending_score, min(scores.values()))

    # ---- trending (SPEC 7) ----------------------------------------------------

    def _scores(self, t):
        h = self.s.half_life_ms
        scores = {}
        for page, ts in self.clicks:
            scores[page] = scores.get(page, 0.0) + 2.0 ** (-(t - ts) / h)
        return scores

    # ---- what the REST answers must be ----------------------------------------

    def trending(self, n=10):
        """GET /api/v1/trending?n= (exact scores; compare with a tolerance)."""
        t = self.max_ts
        items = []
        if t is not None:
            items = [{"page_url": p, "score": v} for p, v in self._scores(t).items()]
        items.sort(key=lambda it: (-it["score"], utf8_key(it["page_url"])))
        return {"as_of": t, "half_life_ms": self.s.half_life_ms, "items": items[:n]}

    def windows(self, wtype=None, state=None, page_url=None, limit=100):
        """GET /api/v1/windows: newest first (end desc, type, page_url asc)."""
        recs = []
        for key, pair in self.pairs.items():
            if wtype is not None and key[0] != wtype:
                continue
            if page_url is not None and key[2] != page_url:
                continue
            if pair.fired and state in (None, "closed"):
                recs.append(self.closed[key])
            elif not pair.fired and state in (None, "open"):
                recs.append(self._window_record(key, pair, False))
        recs.sort(key=lambda r: (-r["end"], TYPE_ORDER[r["type"]], utf8_key(r["page_url"]),
                                 -r["start"]))
        return {"items": recs[:limit]}

    def sessions(self, limit=100):
        """GET /api/v1/sessions: every session_end emission, newest first."""
        recs = sorted(self.session_emissions,
                      key=lambda r: (-r["end"], utf8_key(r["user_id"]), -r["start"],
                                     -r["revision"], -r["page_views"]))
        return {"items": recs[:limit]}

    def user_sessions(self, user):
        """GET /api/v1/sessions/{user}: open sessions, oldest first."""
        items = [self._session_record(user, x, False, x.next_revision())
                 for x in self.users.get(user, []) if not x.fired]
        return {"user_id": user, "items": items}

    def late(self, limit=100):
        """GET /api/v1/late: newest first."""
        return {"items": list(reversed(self.late_events))[:limit]}

    def open_windows(self):
        return sum(1 for p in self.pairs.values() if not p.fired)

    def kept_windows(self):
        return sum(1 for k, p in self.pairs.items()
                   if p.fired and not self._purged(self._end(k), self.w))

    def open_sessions(self):
        return sum(1 for ss in self.users.values() for x in ss if not x.fired)

    def stats(self):
        """The deterministic part of GET /api/v1/stats."""
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "late_dropped": len(self.late_events),
            "late_updates": sum(1 for r in self.window_emissions if r["revision"] > 0),
            "session_late_dropped": self.session_late_dropped,
            "session_late_updates": sum(1 for r in self.session_emissions if r["revision"] > 0),
            "watermark": self.w,
            "event_clock": self.max_ts,
            "open_windows": self.open_windows(),
            "kept_windows": self.kept_windows(),
            "open_sessions": self.open_sessions(),
        }


class IntervalJoin:
    """SPEC 14's stream-stream interval join, brute force: every buffered
    event in two lists, every rule re-checked on every call, no index.

        j = IntervalJoin(within_ms, grace_ms, left_outer)
        j.push(side, key, ts, row, wm)   # side 0 = left, 1 = right; wm = W left by the events before
        j.advance(wm)                    # a watermark POST (or the W after a request)
        j.out                            # emitted rows: (left row, right row or None)

    Rules, as the SPEC states them:
    - a pair joins when its keys are equal (None, SQL NULL, joins nothing) and
      |ts(l) - ts(r)| <= within; it is emitted once, by the later arrival;
    - each side's events are kept until W >= ts + within + grace; an event
      arriving when W is already there is late: it does nothing;
    - LEFT: a left event that found no partner is emitted once with None for
      the right side when W >= ts + within (at its own push if W is there);
      a partner arriving later within grace still pairs with it.
    """

    def __init__(self, within_ms, grace_ms, left_outer):
        self.d, self.g, self.left_outer = within_ms, grace_ms, left_outer
        self.buf = ([], [])     # [ts, key, row, arrival, matched, null_emitted]
        self.w = None
        self.arrivals = 0
        self.out = []
        self.late = 0

    def _emit_due(self):
        if not self.left_outer or self.w is None:
            return
        for e in sorted(self.buf[0], key=lambda e: (e[0], e[3])):
            if not e[4] and not e[5] and self.w >= e[0] + self.d:
                e[5] = True
                self.out.append((e[2], None))

    def advance(self, wm):
        if wm is None or (self.w is not None and wm <= self.w):
            return
        self.w = wm
        self._emit_due()
        for side in (0, 1):
            self.buf[side][:] = [e for e in self.buf[side] if self.w < e[0] + self.d + self.g]

    def push(self, side, key, ts, row, wm):
        self.advance(wm)
        self.arrivals += 1
        if self.w is not None and self.w >= ts + self.d + self.g:
            self.late += 1
            return
        e = [ts, key, row, self.arrivals, False, False]
        if key is not None:
            for o in self.buf[1 - side]:
                if o[1] == key and abs(o[0] - ts) <= self.d:
                    e[4] = o[4] = True
                    self.out.append((row, o[2]) if side == 0 else (o[2], row))
        if key is None and not (self.left_outer and side == 0):
            return
        self.buf[side].append(e)
        self._emit_due()

    def buffered(self):
        return len(self.buf[0]), len(self.buf[1])


def sql_window_assign(cells, key, ev, size, advance, grace, w):
    """One event into the (window, group) cells of a windowed SQL view (SPEC 4
    and 13), judged against the per-event watermark w (None before the first
    event): a window takes no event once w >= end - 1 + grace; one taking an
    event after it fired (w >= end - 1) fires again, at revision 0 if this is
    its first row. A cell is {"rows": [...], "rev": None (not fired) or n}.
    """
    ts = ev["timestamp"]
    start = (ts // advance) * advance
    while start > ts - size:
        end = start + size
        if w is None or w < end - 1 + grace:
            cell = cells.get((start, key))
            if w is not None and w >= end - 1:
                if cell is None:
                    cell = cells[(start, key)] = {"rows": [], "rev": 0}
                else:
                    cell["rev"] = (0 if cell["rev"] is None else cell["rev"]) + 1
            elif cell is None:
                cell = cells[(start, key)] = {"rows": [], "rev": None}
            cell["rows"].append(ev)
        start -= advance
