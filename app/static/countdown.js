// The countdown page of one auction (/auctions/{id}), over WS /auctions/{id}/updates. The clock,
// the countdown rules and the socket's reconnect and poll behaviour live in timer.js.
import { Countdown, LIVE, LiveSocket, ServerClock, WARN_ABOVE_MS, fetchJson, fmt, now, spoken, syncBody } from "/static/timer.js";

const $ = (id) => document.getElementById(id);
const auctionId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const clock = new ServerClock();
const cd = new Countdown(clock);
let lastRemaining = null, lastDrift = 0, lastLabelAt = 0;
$("auction-id").textContent = auctionId;

function announce(text) { $("announcer").textContent = text; }

function showConnection(state) {
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
  if (lastDrift === 0 && clock.estimator.ready) {
    $("drift-badge").textContent = `in sync (±${Math.round(clock.estimator.bestRtt / 2)} ms)`;
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
  const got = await fetchJson(`/auctions/${encodeURIComponent(auctionId)}/timer`);
  if (got === null) return;
  socket.pollEveryMs = got.body.tick_interval_ms;
  carryOut(cd.hydrate(got.body, got.sent, got.received));
}

async function sync() {
  if (cd.state === null) return;
  const got = await fetchJson("/timers/sync", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: syncBody(cd),
  });
  if (got === null) return;
  carryOut(cd.hydrate(got.body, got.sent, got.received));
  window.auctionCountdown.syncs += 1;
}

const socket = new LiveSocket({
  path: `/auctions/${encodeURIComponent(auctionId)}/updates`,
  clock,
  onOpen: rehydrate,
  onMessage: (msg, received) => {
    if (msg.type === "snapshot") socket.pollEveryMs = msg.tick_interval_ms;
    carryOut(cd.onMessage(msg, received));
  },
  poll: rehydrate,
  onState: showConnection,
});

$("refresh").addEventListener("click", () => { rehydrate(); socket.reconnectIfClosed(); });

// Diagnostics (and what the browser tests read). skewDisplay shifts only this page's
// clock estimate, to see the drift handling at work.
window.auctionCountdown = {
  remainingMs: () => cd.remainingMs(),
  state: () => cd.state,
  connection: () => socket.state,
  offset: () => clock.offset,
  skewDisplay: (ms) => clock.skew(ms),
  get polls() { return socket.polls; },
  syncs: 0,
};

const frame = () => { render(); requestAnimationFrame(frame); };
requestAnimationFrame(frame);
setInterval(render, 250); // animation frames stop in background tabs; the value is right whenever drawn
rehydrate();
socket.connect();
