// The catalogue page (/): the running auctions, ending soonest first, each with its countdown,
// all over one WebSocket (/updates). The list comes from GET /auctions (again every
// RELIST_EVERY_MS, which is how new lots appear, and as the poll while the socket is down);
// every lot shown is subscribed on the socket. The clock, the countdown rules and the socket's
// reconnect and poll behaviour are the single-auction page's (timer.js).
import { Countdown, LiveSocket, ServerClock, WARN_ABOVE_MS, fetchJson, fmt, spoken, syncBody } from "/static/timer.js";

const MAX_LOTS = 500; // the listing's largest page, and the gateway's default cap per socket
const RELIST_EVERY_MS = 10000;
const LEAVE_AFTER_MS = 2000; // an ended lot stays, faded, this long before it leaves
const SOON_MS = 60000;
const ANNOUNCE_EVERY_MS = 1000; // announcements are gathered and spoken at most this often

const $ = (id) => document.getElementById(id);
const clock = new ServerClock();
const lots = new Map(); // auction_id -> {cd, row, text, leaving}
const endsFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit", second: "2-digit" });
const heard = [];
let lastDrift = 0;

// ---- the live region: extensions and endings, gathered, politely ------------------------------

function announce(text) {
  heard.push(text);
  window.auctionCatalogue.announced.push(text);
}
setInterval(() => {
  if (heard.length) $("announcer").textContent = heard.splice(0).join(". ");
}, ANNOUNCE_EVERY_MS);

// ---- rows -------------------------------------------------------------------------------------

const before = (a, b) => a.ends_at_ms < b.ends_at_ms || (a.ends_at_ms === b.ends_at_ms && a.auction_id < b.auction_id);

function place(lot) {
  const body = $("lots"), state = lot.cd.state;
  const next = [...body.rows].find((row) => row !== lot.row && before(state, lots.get(row.dataset.auction).cd.state));
  body.insertBefore(lot.row, next ?? null);
}

function fill(lot) {
  const state = lot.cd.state, cells = lot.row.cells;
  cells[1].textContent = endsFormat.format(state.ends_at_ms);
  cells[3].textContent = state.extension_count ? `${state.extension_count} (+${spoken(state.extension_total_ms)})` : "none";
}

function addLot(state) {
  const row = $("lot").content.firstElementChild.cloneNode(true);
  row.dataset.auction = state.auction_id;
  const link = row.querySelector("a");
  link.href = `/auctions/${encodeURIComponent(state.auction_id)}`;
  link.textContent = state.auction_id;
  const lot = { cd: new Countdown(clock), row, text: "", leaving: false };
  lot.cd.applyState(state);
  lots.set(state.auction_id, lot);
  fill(lot);
  place(lot);
  return lot;
}

function removeLot(id) {
  const lot = lots.get(id);
  if (!lot) return;
  lot.row.remove();
  lots.delete(id);
}

function endLot(id, status) {
  const lot = lots.get(id);
  if (!lot || lot.leaving) return;
  lot.leaving = true;
  lot.row.classList.add("ended");
  socket.send({ type: "unsubscribe", auctions: [id] });
  announce(status === "cancelled" ? `Auction ${id} was cancelled` : `Auction ${id} has ended`);
  setTimeout(() => removeLot(id), LEAVE_AFTER_MS);
}

function highlight(lot) {
  const flash = getComputedStyle(document.documentElement).getPropertyValue("--flash");
  lot.row.classList.add("extended");
  lot.row.animate([{ backgroundColor: flash }, { backgroundColor: "transparent" }], { duration: 3000, easing: "ease-out" }).finished.then(() => {
    if (!lot.row.getAnimations().length) lot.row.classList.remove("extended");
  });
}

// ---- what the server says ---------------------------------------------------------------------

function showDrift(drift, warn) {
  lastDrift = drift;
  const badge = $("drift-badge");
  badge.textContent = `drift ${drift >= 0 ? "+" : ""}${Math.round(drift)} ms`;
  badge.setAttribute("aria-label", `Clock drift: ${Math.round(Math.abs(drift))} milliseconds${warn ? ", warning" : ""}`);
  badge.classList.toggle("badge-warn", warn);
  if (warn) {
    const banner = $("drift-banner");
    banner.textContent = `Your countdowns were ${Math.round(Math.abs(drift))} ms off; they have been corrected.`;
    banner.hidden = false;
  }
}

function carryOut(lot, outputs) {
  const id = lot.cd.state?.auction_id;
  for (const o of outputs) {
    if (o.kind === "extended") {
      fill(lot); place(lot); highlight(lot);
      announce(`Auction ${id} extended by ${spoken(o.to - o.from)}: ${spoken(lot.cd.remainingMs() ?? 0)} left`);
    } else if (o.kind === "ended") endLot(id, o.status);
    else if (o.kind === "corrected") showDrift(o.drift, Math.abs(o.drift) > WARN_ABOVE_MS);
    else if (o.kind === "sync") sync(lot);
    else if (o.kind === "rehydrate") rehydrate(lot);
  }
}

async function rehydrate(lot) {
  const got = await fetchJson(`/auctions/${encodeURIComponent(lot.cd.state.auction_id)}/timer`);
  if (got !== null) carryOut(lot, lot.cd.hydrate(got.body, got.sent, got.received));
  return got !== null;
}

async function sync(lot) {
  const got = await fetchJson("/timers/sync", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: syncBody(lot.cd),
  });
  if (got === null) return;
  carryOut(lot, lot.cd.hydrate(got.body, got.sent, got.received));
  window.auctionCatalogue.syncs += 1;
}

// The list again: new lots are added and subscribed; lots no longer listed have ended (we may
// have missed the message) or fell beyond the first MAX_LOTS: a GET tells which.
async function relist() {
  const got = await fetchJson(`/auctions?status=running&limit=${MAX_LOTS}`);
  if (got === null) return;
  clock.sample(got.sent, got.body.server_time_ms, got.received);
  socket.pollEveryMs = got.body.tick_interval_ms;
  const listed = new Set(), fresh = [];
  for (const state of got.body.auctions) {
    listed.add(state.auction_id);
    const lot = lots.get(state.auction_id);
    if (lot) carryOut(lot, lot.cd.applyState(state));
    else fresh.push(addLot(state).cd.state.auction_id);
  }
  if (fresh.length) socket.send({ type: "subscribe", auctions: fresh });
  for (const [id, lot] of lots) {
    if (listed.has(id) || lot.leaving) continue;
    socket.send({ type: "unsubscribe", auctions: [id] });
    if (!(await rehydrate(lot)) || !lot.leaving) removeLot(id);
  }
}

const socket = new LiveSocket({
  path: "/updates",
  clock,
  onOpen: () => {
    const following = [...lots.keys()].filter((id) => !lots.get(id).leaving);
    if (following.length) socket.send({ type: "subscribe", auctions: following });
    relist();
  },
  onMessage: (msg, received) => {
    if (msg.type === "error") {
      if (msg.code === "rate_limited") setTimeout(() => socket.onOpen(), msg.retry_after_ms);
      return;
    }
    const lot = lots.get(msg.auction_id);
    if (!lot || lot.leaving) return; // no longer followed: its last messages may still come
    if (msg.type === "snapshot") socket.pollEveryMs = msg.tick_interval_ms;
    carryOut(lot, lot.cd.onMessage(msg, received));
  },
  poll: relist,
  onState: (state) => {
    const pill = $("pill");
    pill.textContent = state;
    pill.className = `pill pill-${state}`;
  },
});

// ---- drawing ----------------------------------------------------------------------------------

function render() {
  for (const lot of lots.values()) {
    const remaining = lot.cd.remainingMs();
    if (remaining === null) continue;
    const text = fmt(remaining);
    if (text === lot.text) continue;
    lot.text = text;
    const time = lot.row.cells[2].firstElementChild;
    time.textContent = text;
    time.dateTime = `PT${Math.floor(remaining / 1000)}S`;
    lot.row.classList.toggle("soon", remaining < SOON_MS);
  }
  $("count").textContent = String([...lots.values()].filter((lot) => !lot.leaving).length);
  $("empty").hidden = lots.size > 0;
  if (lastDrift === 0 && clock.estimator.ready) {
    $("drift-badge").textContent = `in sync (±${Math.round(clock.estimator.bestRtt / 2)} ms)`;
    $("drift-badge").setAttribute("aria-label", "Clock drift: none measured");
  }
}

$("refresh").addEventListener("click", () => { relist(); socket.reconnectIfClosed(); });

// Diagnostics (and what the browser tests read).
window.auctionCatalogue = {
  ids: () => [...$("lots").rows].filter((row) => !row.classList.contains("ended")).map((row) => row.dataset.auction),
  state: (id) => lots.get(id)?.cd.state ?? null,
  remainingMs: (id) => lots.get(id)?.cd.remainingMs() ?? null,
  seq: (id) => lots.get(id)?.cd.seq ?? null,
  connection: () => socket.state,
  offset: () => clock.offset,
  get polls() { return socket.polls; },
  syncs: 0,
  announced: [],
};

const frame = () => { render(); requestAnimationFrame(frame); };
requestAnimationFrame(frame);
setInterval(render, 250); // animation frames stop in background tabs; the value is right whenever drawn
setInterval(relist, RELIST_EVERY_MS);
relist().then(() => socket.connect());
