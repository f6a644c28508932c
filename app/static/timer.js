// What every countdown page shares. Same algorithm as the Python client (app/client/countdown.py):
// shown remaining = ends_at - (performance.now() + offset), the offset estimated from round
// trips (the middle of what recent ones allow together), checked against every message the
// server stamps; drift under 100 ms is slewed, 100-250 ms snapped, over 250 ms warned, over
// 500 ms resynced. One ServerClock serves every auction a page shows. The device's wall clock
// (Date) is never read.
"use strict";

export const SLEW_BELOW_MS = 100, WARN_ABOVE_MS = 250, SYNC_ABOVE_MS = 500, SLEW_RATE = 0.1;
const MIN_LATENCY_SLACK_MS = 100, WINDOW = 16, RECONNECTING_MS = 3000;
const BASE_BACKOFF_MS = 250, MAX_BACKOFF_MS = 10000, PING_EVERY_MS = 5000, FIRST_PINGS = 3;
export const LIVE = new Set(["scheduled", "running"]);
const UPDATES = new Set(["tick", "registered", "started", "extended", "completed", "cancelled"]);
export const now = () => performance.now();

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

// The page's estimate of the server's clock, slewed toward the estimator's.
export class ServerClock {
  constructor() { this.estimator = new ClockEstimator(); this.offset = null; this.slewAt = 0; }
  advance() {
    const t = now();
    if (this.estimator.ready && this.offset !== null) {
      const gap = this.estimator.offset - this.offset, step = SLEW_RATE * Math.max(0, t - this.slewAt);
      this.offset += Math.max(-step, Math.min(step, gap));
    }
    this.slewAt = t;
    return this.offset;
  }
  serverNow() { return this.offset === null ? null : now() + this.advance(); }
  sample(sent, serverMs, received) {
    this.estimator.add(sent, serverMs, received);
    if (this.offset === null || Math.abs(this.estimator.offset - this.advance()) >= SLEW_BELOW_MS) {
      this.offset = this.estimator.offset;
    }
  }
  bounds(serverMs, received) {
    const slack = Math.max(MIN_LATENCY_SLACK_MS, this.estimator.worstRtt);
    return [serverMs - received, serverMs + slack - received];
  }
  // A message stamped serverMs arrived at received: correct the estimate if it disagrees.
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
  skew(ms) { this.offset += ms; this.estimator.shift(ms); } // diagnostics: see the drift handling work
}

// One auction: its newest state and its channel's seq; its remaining time on the shared clock.
export class Countdown {
  constructor(clock) { this.clock = clock; this.state = null; this.seq = null; }
  remainingMs() {
    const serverNow = this.clock.serverNow();
    if (this.state === null || serverNow === null) return null;
    if (!LIVE.has(this.state.status)) return 0;
    return Math.max(0, Math.round(this.state.ends_at_ms - serverNow));
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
    this.clock.sample(sent, body.server_time_ms, received);
    return this.applyState(body);
  }
  onMessage(msg, received) {
    if (msg.type === "snapshot") {
      this.seq = msg.seq;
      const out = this.clock.check(msg.server_time_ms, received);
      return msg.state ? out.concat(this.applyState(msg.state)) : out;
    }
    if (UPDATES.has(msg.type)) {
      const out = [];
      if (this.seq !== null && msg.seq !== this.seq + 1) out.push({ kind: "rehydrate" });
      this.seq = msg.seq;
      const next = Object.assign({}, msg); delete next.type; delete next.seq;
      return out.concat(this.applyState(next), this.clock.check(msg.server_time_ms, received));
    }
    return [];
  }
}

// The socket every page keeps: reconnects with exponential backoff and full jitter, pings for
// clock samples (a few at once, then every 5 s), and while it is down (or the gateway says its
// feed is interrupted) calls poll() every pollEveryMs until it is back. States: connecting,
// live, reconnecting, polling.
export class LiveSocket {
  constructor({ path, clock, onOpen, onMessage, poll, onState }) {
    Object.assign(this, { path, clock, onOpen, onMessage, poll, onState });
    this.state = "connecting"; this.socket = null; this.attempt = 0; this.poller = null; this.downTimer = null;
    this.pollEveryMs = 1000; this.polls = 0;
  }
  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state);
  }
  startPolling(afterMs) {
    if (this.poller !== null || this.downTimer !== null) return;
    this.downTimer = setTimeout(() => {
      this.downTimer = null;
      this.setState("polling");
      const poll = async () => { this.polls += 1; await this.poll(); this.poller = setTimeout(poll, this.pollEveryMs); };
      poll();
    }, afterMs);
  }
  stopPolling() {
    clearTimeout(this.downTimer); clearTimeout(this.poller); this.downTimer = null; this.poller = null;
  }
  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }
  connect() {
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${this.path}`);
    this.socket = ws;
    let pinger = null, pings = 0;
    const ping = () => {
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send(JSON.stringify({ type: "ping", client_time_ms: now() }));
      pings += 1;
      pinger = setTimeout(ping, pings < FIRST_PINGS ? 200 : PING_EVERY_MS);
    };
    ws.onopen = () => { this.attempt = 0; this.stopPolling(); this.setState("live"); this.onOpen(); ping(); };
    ws.onmessage = (event) => {
      const received = now(), msg = JSON.parse(event.data);
      if (msg.type === "pong") { this.clock.sample(msg.client_time_ms, msg.server_time_ms, received); return; }
      if (msg.type === "feed") {
        if (msg.status === "interrupted") { this.setState("polling"); this.startPolling(0); }
        else { this.stopPolling(); this.setState("live"); this.poll(); }
        return;
      }
      this.onMessage(msg, received);
    };
    ws.onclose = () => {
      clearTimeout(pinger);
      if (this.socket !== ws) return;
      if (this.state === "live" || this.state === "connecting") this.setState("reconnecting");
      this.startPolling(RECONNECTING_MS);
      const delay = Math.random() * Math.min(MAX_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** this.attempt);
      this.attempt += 1;
      setTimeout(() => this.connect(), delay);
    };
  }
  reconnectIfClosed() {
    if (this.socket && this.socket.readyState === WebSocket.CLOSED) this.connect();
  }
}

// GET or POST JSON; the answer's body with when it was sent and received, or null.
export async function fetchJson(url, options = {}) {
  const sent = now();
  try {
    const response = await fetch(url, Object.assign({ cache: "no-store" }, options));
    if (!response.ok) return null;
    return { body: await response.json(), sent, received: now() };
  } catch (err) { return null; }
}

export function syncBody(countdown) {
  return JSON.stringify({
    auction_id: countdown.state.auction_id, client_remaining_ms: countdown.remainingMs() ?? 0,
    version: countdown.state.version, client_time_ms: Math.round(now()),
  });
}

// ---- words and numbers -------------------------------------------------------------------------

function parts(ms) {
  let s = Math.floor(ms / 1000);
  const days = Math.floor(s / 86400); s %= 86400;
  const hours = Math.floor(s / 3600); s %= 3600;
  const minutes = Math.floor(s / 60);
  return { days, hours, minutes, seconds: s % 60, milliseconds: ms % 1000 };
}
const digital = new Intl.DurationFormat(undefined, { style: "digital", hoursDisplay: "always" });
const digitalTenths = new Intl.DurationFormat(undefined, { style: "digital", hoursDisplay: "always", fractionalDigits: 1 });
const long = new Intl.DurationFormat(undefined, { style: "long" });
const noSeconds = new Intl.NumberFormat(undefined, { style: "unit", unit: "second", unitDisplay: "long" }).format(0);

// 0:01:29 above a minute (2 days, 3:04:05 above a day), 0:00:09.5 in the last minute.
export function fmt(ms) {
  const p = parts(Math.max(0, Math.floor(ms)));
  if (ms < 60000) return digitalTenths.format({ hours: 0, minutes: 0, seconds: p.seconds, milliseconds: p.milliseconds });
  return digital.format({ days: p.days, hours: p.hours, minutes: p.minutes, seconds: p.seconds });
}

// "2 minutes, 3 seconds" (whole seconds, rounded up: what is left to act in).
export function spoken(ms) {
  const p = parts(Math.ceil(Math.max(0, ms) / 1000) * 1000);
  delete p.milliseconds;
  return Object.values(p).some((n) => n > 0) ? long.format(p) : noSeconds;
}
