// The phone relay (docs/architecture.md, "Phone relay"): the app served by a gateway carries the gateway's
// unsent samples to the server with the user's login, and the server's signed receipt back to the gateway,
// so that the gateway stops holding what the server has.
//
//   gateway ──GET /local/v1/relay/samples──▶ outbox (IndexedDB) ──POST /api/v1/relay──▶ server
//   gateway ◀──WebSocket /local/v1/relay/receipt── receipts (IndexedDB) ◀──────receipt────┘
//
// Every step is idempotent, so an interruption anywhere loses nothing and stores nothing twice: a sample
// leaves the outbox only in the same IndexedDB transaction that keeps its receipt; an upload whose reply was
// lost is sent again and counted as duplicates (the server dedups by device, battery, seq); a receipt that
// never reaches the gateway costs nothing (its own later upload of those samples counts as duplicates).
//
// This runs on the gateway's origin (http://<gateway>:8081): it reaches the gateway as its own origin and the
// server cross-origin (the server lists this origin in TRACKINGBMS_RELAY_ORIGINS). An https page from the
// server could not do it: it may not fetch an http LAN address. IndexedDB is per origin, so the outbox and
// the receipts live with this gateway address; a receipt is only handed to the gateway whose relay key it
// names (another gateway at the same address would refuse it anyway: it checks the server's signature).
//
// Hand-written over the raw IndexedDB and WebSocket APIs (a few promises), like localdb.js: no build step.

import { done, openDb, req } from "./idb.js";

const DB_NAME = "tbms-relay";
const DB_VERSION = 1;
const LAST_KEY = "tbms.relay.last";
/** Samples per page and per upload (the server takes up to 1,000 per request). */
export const PAGE = 500;
/** At most this many samples carried per visit when the server cannot be reached (~12 MB for 16S). */
export const COLLECT_MAX = 20000;
const TIMEOUT_MS = 20000;

let dbPromise = null;
let running = null; // one relay at a time: callers share the run in progress
const cursors = new Map(); // device_key → the gateway's page cursor already carried (this page's lifetime)

export class RelayAuthError extends Error {}

function open() {
  if (!dbPromise) {
    dbPromise = openDb(DB_NAME, DB_VERSION, (db) => {
      // samples on their way to the server: one per (gateway, battery, seq), so collecting twice is harmless
      db.createObjectStore("outbox", { keyPath: ["device_key", "battery_id", "seq"] });
      // receipts on their way back to the gateway
      db.createObjectStore("receipts", { keyPath: "id", autoIncrement: true });
    });
  }
  return dbPromise;
}

/** Every outbox key of one gateway: [device_key] sorts before [device_key, …] and [device_key, []] after. */
function ofDevice(deviceKey) {
  return IDBKeyRange.bound([deviceKey], [deviceKey, []]);
}

function withToken(path, lanToken) {
  if (!lanToken) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(lanToken);
}

async function fetchJson(url, init = {}) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  try {
    const resp = await fetch(url, { cache: "no-store", ...init, signal: ctl.signal });
    let body = null;
    try {
      body = await resp.json();
    } catch {
      /* not JSON: the status says enough */
    }
    return { status: resp.status, body, headers: resp.headers };
  } finally {
    clearTimeout(timer);
  }
}

function detail(body, status) {
  const d = body && body.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d) && d[0] && d[0].msg) return d[0].msg;
  return `HTTP ${status}`;
}

// -- the gateway side ---------------------------------------------------------------------------------

/** The gateway's relay facts: device_key, server_urls, unsent. */
export async function gatewayInfo(lanToken = "") {
  const { status, body } = await fetchJson(withToken("/local/v1/relay", lanToken));
  if (status !== 200) throw new Error(`gateway relay info: ${detail(body, status)}`);
  return body;
}

async function keep(deviceKey, samples) {
  const db = await open();
  const tx = db.transaction("outbox", "readwrite");
  const store = tx.objectStore("outbox");
  for (const sample of samples) {
    store.put({ device_key: deviceKey, battery_id: sample.battery_id, seq: sample.seq, sample });
  }
  await done(tx);
}

/** Carry up to ``max`` of the gateway's unsent samples into the outbox (oldest first). Returns how many. */
export async function collectUnsent({ lanToken = "", max = COLLECT_MAX, pageSize = PAGE } = {}) {
  const info = await gatewayInfo(lanToken);
  let after = cursors.get(info.device_key) || 0;
  let carried = 0;
  while (carried < max) {
    const limit = Math.min(pageSize, max - carried);
    const path = `/local/v1/relay/samples?after=${after}&limit=${limit}`;
    const { status, body } = await fetchJson(withToken(path, lanToken));
    if (status !== 200) throw new Error(`gateway unsent samples: ${detail(body, status)}`);
    if (body.samples.length) await keep(body.device_key, body.samples);
    carried += body.samples.length;
    if (body.next === null || body.next === undefined) break;
    after = body.next;
    cursors.set(info.device_key, after);
  }
  return { device_key: info.device_key, carried };
}

function sendReceipt(receipt, lanToken) {
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + withToken("/local/v1/relay/receipt", lanToken));
    let answered = false;
    const timer = setTimeout(() => ws.close(), TIMEOUT_MS);
    ws.onopen = () => ws.send(JSON.stringify(receipt));
    ws.onmessage = (ev) => {
      answered = true;
      clearTimeout(timer);
      try {
        resolve(JSON.parse(ev.data));
      } catch {
        reject(new Error("gateway: unreadable answer to a receipt"));
      }
      ws.close();
    };
    ws.onclose = () => {
      clearTimeout(timer);
      if (!answered) reject(new Error("gateway: connection closed before it answered the receipt"));
    };
  });
}

/** Hand this gateway the receipts kept for it. Returns {acked, refused}; keeps the rest for the next visit. */
export async function deliverReceipts({ lanToken = "", deviceKey } = {}) {
  deviceKey = deviceKey || (await gatewayInfo(lanToken)).device_key;
  const db = await open();
  const mine = (await req(db.transaction("receipts").objectStore("receipts").getAll())).filter(
    (r) => r.device_key === deviceKey,
  );
  let acked = 0;
  let refused = 0;
  for (const entry of mine) {
    const answer = await sendReceipt(entry.receipt, lanToken); // a network error: kept for the next visit
    if (typeof answer.acked === "number") acked += answer.acked;
    else if (answer.status === 400 || answer.status === 403) {
      // refused (altered, or signed for a token this gateway no longer has): it can never apply
      refused += 1;
      console.warn("gateway refused a relay receipt:", answer.error);
    } else throw new Error(`gateway: ${answer.error || "no answer to a receipt"}`);
    const tx = db.transaction("receipts", "readwrite");
    tx.objectStore("receipts").delete(entry.id);
    await done(tx);
  }
  return { acked, refused };
}

// -- the server side ----------------------------------------------------------------------------------

async function deviceKeys(db) {
  const keys = await req(db.transaction("outbox").objectStore("outbox").getAllKeys());
  return [...new Set(keys.map((k) => k[0]))];
}

/** Upload the outbox to the server (all gateways', or one's), keeping each receipt. Returns the totals. */
export async function uploadOutbox({ serverUrl, token, deviceKey = null, pageSize = PAGE } = {}) {
  const db = await open();
  const totals = { uploaded: 0, accepted: 0, duplicates: 0, rejected: 0, errors: [] };
  for (const dk of deviceKey ? [deviceKey] : await deviceKeys(db)) {
    const err = await uploadDevice(db, dk, { serverUrl, token, pageSize }, totals);
    if (err) totals.errors.push(err);
  }
  return totals;
}

async function uploadDevice(db, dk, { serverUrl, token, pageSize }, totals) {
  for (;;) {
    const entries = await req(db.transaction("outbox").objectStore("outbox").getAll(ofDevice(dk), pageSize));
    if (!entries.length) return null;
    let reply;
    try {
      reply = await fetchJson(`${serverUrl.replace(/\/+$/, "")}/api/v1/relay`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
        body: JSON.stringify({ device_key: dk, samples: entries.map((e) => e.sample) }),
      });
    } catch (err) {
      // the browser does not say why: no network, or the server does not allow this page's origin (CORS)
      throw new Error(`${serverUrl} did not answer (${err.message}); if it does answer in a browser tab, ` +
        `add ${location.origin} to the server's TRACKINGBMS_RELAY_ORIGINS`);
    }
    const { status, body, headers } = reply;
    if (status === 401) throw new RelayAuthError(detail(body, status));
    if (status === 429) {
      const wait = Math.min(30, Number.parseInt(headers.get("Retry-After") || "1", 10) || 1);
      await new Promise((r) => setTimeout(r, wait * 1000));
      continue;
    }
    // 403 (a viewer), 404 (not a gateway of this user's tenant): kept, for a user who may
    if (status !== 200) return `${status}: ${detail(body, status)}`;
    // the samples leave the outbox with their receipt in one transaction (rejected ones too: the server
    // will not take them from anyone, and the gateway keeps them and hears why from its own upload)
    const tx = db.transaction(["outbox", "receipts"], "readwrite");
    const outbox = tx.objectStore("outbox");
    for (const e of entries) outbox.delete([e.device_key, e.battery_id, e.seq]);
    tx.objectStore("receipts").add({ device_key: dk, device: body.device, receipt: body.receipt, at: Date.now() });
    await done(tx);
    totals.uploaded += entries.length;
    totals.accepted += body.accepted;
    totals.duplicates += body.duplicates;
    totals.rejected += body.rejected.length;
  }
}

// -- the whole relay ------------------------------------------------------------------------------------

/**
 * Relay what can be relayed now: with the gateway reachable (``gateway``), its receipts first, then its
 * unsent samples page by page (download, upload, receipt back); in any case the outbox collected earlier.
 * Concurrent calls share one run. Resolves to the totals (also kept as ``lastRelay()``, and sent as the
 * window event ``tbms:relay``).
 */
export function relayUnsent(options = {}) {
  if (!running) running = runRelay(options).finally(() => (running = null));
  return running;
}

async function runRelay({ serverUrl, token, lanToken = "", gateway = true, pageSize = PAGE, maxPages = 200 }) {
  const result = { at: new Date().toISOString(), uploaded: 0, accepted: 0, duplicates: 0, rejected: 0,
    acked: 0, refused: 0, errors: [] };
  const add = (t) => {
    for (const k of ["uploaded", "accepted", "duplicates", "rejected", "acked", "refused"]) result[k] += t[k] || 0;
    if (t.errors) result.errors.push(...t.errors);
  };
  try {
    if (!serverUrl || !token) throw new Error("relay: no server or no login");
    // what was carried before (maybe from this gateway, maybe while it was out of reach)
    add(await uploadOutbox({ serverUrl, token, pageSize }));
    if (gateway) {
      const info = await gatewayInfo(lanToken);
      const dk = info.device_key;
      add(await deliverReceipts({ lanToken, deviceKey: dk }));
      let after = 0;
      for (let page = 0; page < maxPages; page++) {
        const path = `/local/v1/relay/samples?after=${after}&limit=${pageSize}`;
        const { status, body } = await fetchJson(withToken(path, lanToken));
        if (status !== 200) throw new Error(`gateway unsent samples: ${detail(body, status)}`);
        if (!body.samples.length) break;
        await keep(dk, body.samples);
        const up = await uploadOutbox({ serverUrl, token, deviceKey: dk, pageSize });
        add(up);
        add(await deliverReceipts({ lanToken, deviceKey: dk }));
        if (up.errors.length || body.next === null || body.next === undefined) break;
        after = body.next;
      }
      cursors.delete(dk);
    }
  } catch (err) {
    result.errors.push(err.message || String(err));
    if (err instanceof RelayAuthError) result.auth = true;
  }
  result.pending = await outboxStatus().catch(() => null);
  localStorage.setItem(LAST_KEY, JSON.stringify(result));
  window.dispatchEvent(new CustomEvent("tbms:relay", { detail: result }));
  return result;
}

/** How many samples wait in the outbox and receipts wait for their gateway. */
export async function outboxStatus() {
  const db = await open();
  const tx = db.transaction(["outbox", "receipts"]);
  const samples = await req(tx.objectStore("outbox").count());
  const receipts = await req(tx.objectStore("receipts").count());
  return { samples, receipts };
}

/** The last relay's totals (or null). */
export function lastRelay() {
  try {
    return JSON.parse(localStorage.getItem(LAST_KEY) || "null");
  } catch {
    return null;
  }
}
