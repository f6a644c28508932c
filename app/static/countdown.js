// The countdown page. Same algorithm as the Python client (app/client/countdown.py):
// shown remaining = ends_at - (performance.now() + offset), the offset estimated from round
// trips (the middle of what recent ones allow together), checked against every tick; drift
// under 100 ms is slewed, 100-250 ms snapped, over 250 ms warned, over 500 ms resynced.
// Date is never used.
"use strict";

(() => {
  const SLEW_BELOW_MS = 100, WARN_ABOVE_MS = 250, SYNC_ABOVE_MS = 500, SLEW_RATE = 0.1;
  const MIN_LATENCY_SLACK_MS = 100, WINDOW = 16, RECONNECTING_MS = 3000;
  const BASE_BACKOFF_MS = 250, MAX_BACKOFF_MS = 10000, PING_EVERY_MS = 5000, FIRST_PINGS = 3;
  const LIVE = new Set(["scheduled", "running"]);
  const now = () => performance.now();

  // Offsets (server time minus performance.now()) each round trip allows: [server - received,
  // server - sent]; one-way messages give only the lower end. The estimate is the middle of
  // the intersection, or the narrowest round trip's middle if the samples disagree.
  class ClockEstimator {
    constructor() { this.intervals = []; this.lows = []; }
    add(sent, serverMs, received) {
      this.intervals.push([serverMs - Math.max(received, sent), serverMs - sent]);
      if (this.intervals.length > WINDOW) this.intervals.shift();
    }
    addLowerBound(serverMs, received) {
      this.lows.push(serverMs - received);
      if (this.lows.length > WINDOW) this.lows.shift();
    }
    shift(by) {
      this.intervals = this.intervals.map(([lo, hi]) => [lo + by, hi + by]);
      this.lows = this.lows.map((lo) => lo + by);
    }
    get ready() { return this.intervals.length > 0; }
    get offset() {
      const low = Math.max(...this.intervals.map(([lo]) => lo), ...this.lows);
      const high = Math.min(...this.intervals.map(([, hi]) => hi));
      if (low <= high) return (low + high) / 2;
      const [lo, hi] = this.intervals.reduce((a, b) => (b[1] - b[0] < a[1] - a[0] ? b : a));
      return (lo + hi) / 2;
    }
    get bestRtt() { return Math.min(...this.intervals.map(([lo, hi]) => hi - lo)); }
    get worstRtt() { return Math.max(...this.intervals.map(([lo, hi]) => hi - lo)); }
  }

  class Countdown {
    constructor() {
      this.estimator = new ClockEstimator();
      this.state = null; this.seq = null; this.offset = null; this.slewAt = 0;
    }
    advance() {
      const t = now();
      if (this.estimator.ready && this.offset !== null) {
        const gap = this.estimator.offset - this.offset, step = SLEW_RATE * Math.max(0, t - this.slewAt);
        this.offset += Math.max(-step, Math.min(step, gap));
      }
      this.slewAt = t;
      return this.offset;
    }
    sample(sent, serverMs, received) {
      this.estimator.add(sent, serverMs, received);
      if (this.offset === null || Math.abs(this.estimator.offset - this.advance()) >= SLEW_BELOW_MS) {
        this.offset = this.estimator.offset;
      }
    }
    remainingMs() {
      if (this.state === null || this.offset === null) return null;
      if (!LIVE.has(this.state.status)) return 0;
      return Math.max(0, Math.round(this.state.ends_at_ms - (now() + this.advance())));
    }
    bounds(serverMs, received) {
      const slack = Math.max(MIN_LATENCY_SLACK_MS, this.estimator.worstRtt);
      return [serverMs - received, serverMs + slack - received];
    }
    check(serverMs, received) {
      if (this.offset === null) return [];
      const [low, high] = this.bounds(serverMs, received);
      const shown = this.advance();
      const drift = shown - Math.min(Math.max(shown, low), high);
      this.estimator.addLowerBound(serverMs, received);
      if (drift === 0) return [];
      const estimate = this.estimator.offset, target = Math.min(Math.max(estimate, low), high);
      this.estimator.shift(target - estimate);
      if (Math.abs(drift) < SLEW_BELOW_MS) return [{ kind: "corrected", drift, how: "slew" }];
      this.offset = target;
      const out = [{ kind: "corrected", drift, how: "snap" }];
      if (Math.abs(drift) > WARN_ABOVE_MS) out.push({ kind: "drift_warning", drift });
      if (Math.abs(drift) > SYNC_ABOVE_MS) out.push({ kind: "sync", drift });
      return out;
    }
    applyState(next) {
      const old = this.state;
      if (old && next.version < old.version) return [];
      this.state = Object.assign({}, old || {}, next);
      if (!old || next.version === old.version) return [];
      const out = [];
      if (next.ends_at_ms > old.ends_at_ms) out.push({ kind: "extended", from: old.ends_at_ms, to: next.ends_at_ms });
      if (!LIVE.has(next.status) && LIVE.has(old.status)) out.push({ kind: "ended", status: next.status });
      return out;
    }
    hydrate(body, sent, received) {
      this.sample(sent, body.server_time_ms, received);
      return this.applyState(body);
    }
    onMessage(msg, received) {
      if (msg.type === "snapshot") {
        this.seq = msg.seq;
        const out = this.check(msg.server_time_ms, received);
        return msg.state ? out.concat(this.applyState(msg.state)) : out;
      }
      if (["tick", "registered", "started", "extended", "completed", "cancelled"].includes(msg.type)) {
        const out = [];
        if (this.seq !== null && msg.seq !== this.seq + 1) out.push({ kind: "rehydrate" });
        this.seq = msg.seq;
        const next = Object.assign({}, msg); delete next.type; delete next.seq;
        return out.concat(this.applyState(next), this.check(msg.server_time_ms, received));
      }
      return [];
    }
  }

  // ---- the page -------------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const auctionId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const base = `${location.protocol}//${location.host}`;
  const cd = new Countdown();
  let connection = "connecting", socket = null, attempt = 0, poller = null, downTimer = null;
  let tickIntervalMs = 1000, lastRemaining = null, lastDrift = 0, lastLabelAt = 0;
  $("auction-id").textContent = auctionId;

  function fmt(ms) {
    if (ms < 60000) return `00:${String(Math.floor(ms / 1000)).padStart(2, "0")}.${Math.floor((ms % 1000) / 100)}`;
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400); s %= 86400;
    const h = Math.floor(s / 3600); s %= 3600;
    const m = Math.floor(s / 60); s %= 60;
    const clock = [h, m, s].map((v) => String(v).padStart(2, "0")).join(":");
    return d ? `${d}d ${clock}` : clock;
  }
  function spoken(ms) {
    let s = Math.ceil(ms / 1000);
    const parts = [];
    for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]]) {
      const n = Math.floor(s / size); s %= size;
      if (n) parts.push(`${n} ${unit}${n === 1 ? "" : "s"}`);
    }
    return parts.length ? parts.join(" ") : "0 seconds";
  }
  function announce(text) { $("announcer").textContent = text; }

  function setConnection(state) {
    if (state === connection) return;
    connection = state;
    const pill = $("pill");
    pill.textContent = state;
    pill.className = `pill pill-${state}`;
  }

  function showDrift(drift, warn) {
    lastDrift = drift;
    const badge = $("drift-badge");
    badge.textContent = `drift ${drift >= 0 ? "+" : ""}${Math.round(drift)} ms`;
    badge.setAttribute("aria-label", `Clock drift: ${Math.round(Math.abs(drift))} milliseconds${warn ? ", warning" : ""}`);
    badge.classList.toggle("badge-warn", warn);
    const banner = $("drift-banner");
    if (warn) {
      banner.textContent = `Your countdown was ${Math.round(Math.abs(drift))} ms off; it has been corrected.`;
      banner.hidden = false;
      announce(`Drift warning: the countdown was ${Math.round(Math.abs(drift))} milliseconds off and was corrected.`);
    }
  }

  function render() {
    const remaining = cd.remainingMs(), state = cd.state, el = $("countdown");
    if (remaining === null || state === null) return;
    el.textContent = fmt(remaining);
    if (lastDrift === 0 && cd.estimator.ready) {
      $("drift-badge").textContent = `in sync (±${Math.round(cd.estimator.bestRtt / 2)} ms)`;
      $("drift-badge").setAttribute("aria-label", "Clock drift: none measured");
    }
    const t = now();
    if (t - lastLabelAt > 1000) {
      lastLabelAt = t;
      el.setAttribute("aria-label", LIVE.has(state.status)
        ? `Time remaining: ${spoken(remaining)}${Math.abs(lastDrift) > WARN_ABOVE_MS ? " (clock drift corrected)" : ""}`
        : `Auction ${state.status}`);
    }
    // The last minutes are announced as the countdown crosses them (not when a jump lands on one).
    for (const mark of [300000, 120000, 60000, 30000, 10000]) {
      const crossed = lastRemaining !== null && lastRemaining > mark && remaining <= mark && lastRemaining - remaining < 2000;
      if (LIVE.has(state.status) && crossed) announce(`${spoken(mark)} left`);
    }
    lastRemaining = remaining;
    const ended = $("ended");
    ended.hidden = LIVE.has(state.status);
    if (!ended.hidden) ended.textContent = state.status === "cancelled" ? "Auction cancelled" : "Auction ended";
    $("rule").textContent = `a bid in the last ${spoken(state.soft_close_window_ms ?? 0)} extends it by ` +
      `${spoken(state.extension_ms ?? 0)}, at most ${spoken(state.max_extension_ms ?? 0)} in all`;
    $("extensions").textContent = state.extension_count
      ? `${state.extension_count} (+${spoken(state.extension_total_ms)})` : "none yet";
  }

  function carryOut(outputs) {
    for (const o of outputs) {
      if (o.kind === "extended") announce(`Extended by ${spoken(o.to - o.from)}: now ${spoken(Math.max(0, cd.remainingMs() ?? 0))} left`);
      else if (o.kind === "ended") announce(o.status === "cancelled" ? "The auction was cancelled" : "The auction has ended");
      else if (o.kind === "corrected") showDrift(o.drift, Math.abs(o.drift) > WARN_ABOVE_MS);
      else if (o.kind === "sync") sync();
      else if (o.kind === "rehydrate") rehydrate();
    }
    render();
  }

  async function rehydrate() {
    const sent = now();
    try {
      const response = await fetch(`${base}/auctions/${encodeURIComponent(auctionId)}/timer`, { cache: "no-store" });
      if (!response.ok) return false;
      const body = await response.json();
      tickIntervalMs = body.tick_interval_ms;
      carryOut(cd.hydrate(body, sent, now()));
      return true;
    } catch (err) { return false; }
  }

  async function sync() {
    const sent = now();
    try {
      const response = await fetch(`${base}/timers/sync`, {
        method: "POST", headers: { "Content-Type": "application/json" }, cache: "no-store",
        body: JSON.stringify({ auction_id: auctionId, client_remaining_ms: cd.remainingMs() ?? 0,
                               version: cd.state ? cd.state.version : 0, client_time_ms: Math.round(sent) }),
      });
      if (!response.ok) return;
      const body = await response.json();
      carryOut(cd.hydrate(body, sent, now()));
      window.auctionCountdown.syncs += 1;
    } catch (err) { /* the next tick checks again */ }
  }

  function startPolling(afterMs) {
    if (poller !== null || downTimer !== null) return;
    downTimer = setTimeout(() => {
      downTimer = null;
      setConnection("polling");
      const poll = async () => { window.auctionCountdown.polls += 1; await rehydrate(); poller = setTimeout(poll, tickIntervalMs); };
      poll();
    }, afterMs);
  }
  function stopPolling() {
    clearTimeout(downTimer); clearTimeout(poller); downTimer = null; poller = null;
  }

  function connect() {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/auctions/${encodeURIComponent(auctionId)}/updates`;
    const ws = new WebSocket(url);
    socket = ws;
    let pinger = null, pings = 0;
    const ping = () => {
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send(JSON.stringify({ type: "ping", client_time_ms: now() }));
      pings += 1;
      pinger = setTimeout(ping, pings < FIRST_PINGS ? 200 : PING_EVERY_MS);
    };
    ws.onopen = () => { attempt = 0; stopPolling(); setConnection("live"); rehydrate(); ping(); };
    ws.onmessage = (event) => {
      const received = now(), msg = JSON.parse(event.data);
      if (msg.type === "pong") { cd.sample(msg.client_time_ms, msg.server_time_ms, received); return; }
      if (msg.type === "feed") {
        if (msg.status === "interrupted") { setConnection("polling"); startPolling(0); }
        else { stopPolling(); setConnection("live"); rehydrate(); }
        return;
      }
      if (msg.type === "snapshot") tickIntervalMs = msg.tick_interval_ms;
      carryOut(cd.onMessage(msg, received));
    };
    ws.onclose = () => {
      clearTimeout(pinger);
      if (socket !== ws) return;
      if (connection === "live" || connection === "connecting") setConnection("reconnecting");
      startPolling(RECONNECTING_MS);
      const delay = Math.random() * Math.min(MAX_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** attempt);
      attempt += 1;
      setTimeout(connect, delay);
    };
  }

  $("refresh").addEventListener("click", () => {
    rehydrate();
    if (socket && socket.readyState === WebSocket.CLOSED) connect();
  });

  // Diagnostics (and what the browser tests read). skewDisplay shifts only this page's
  // clock estimate, to see the drift handling at work.
  window.auctionCountdown = {
    remainingMs: () => cd.remainingMs(),
    state: () => cd.state,
    connection: () => connection,
    offset: () => cd.offset,
    skewDisplay: (ms) => { cd.offset += ms; cd.estimator.shift(ms); },
    polls: 0,
    syncs: 0,
  };

  const frame = () => { render(); requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
  setInterval(render, 250); // animation frames stop in background tabs; the value is right whenever drawn
  rehydrate();
  connect();
})();
