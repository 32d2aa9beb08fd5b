// The gateway's local API (direct mode): state, history, the live stream; every sample seen is kept on the
// phone (localdb.js). Only used when a gateway served the app (same origin: no CORS, no mixed content).

import { addSamples, allLatest, keepPerPack, newestTime, putLatest } from "./localdb.js";

const TOKEN_KEY = "tbms.lanToken";

export class LanTokenError extends Error {}

export function lanToken() {
  const fromUrl = new URLSearchParams(location.search).get("token");
  if (fromUrl) localStorage.setItem(TOKEN_KEY, fromUrl);
  return fromUrl || localStorage.getItem(TOKEN_KEY) || localStorage.getItem("tbms_lan_token") || "";
}

export function setLanToken(token) {
  localStorage.setItem(TOKEN_KEY, token);
}

function withToken(path) {
  const token = lanToken();
  if (!token) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

async function getJson(path, timeoutMs = 8000) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const resp = await fetch(withToken(path), { cache: "no-store", signal: ctl.signal });
    if (resp.status === 401) throw new LanTokenError("LAN token required");
    if (!resp.ok) throw new Error(`${path}: ${resp.status}`);
    return await resp.json();
  } finally {
    clearTimeout(timer);
  }
}

export const gw = {
  state: (timeoutMs) => getJson("/local/v1/state", timeoutMs),
  history: (params) => getJson("/local/v1/history?" + new URLSearchParams(params)),
};

/** Fetch what the gateway took since the newest point kept here (its newest `keep` at most), per pack. */
export async function backfill(batteryIds) {
  const keep = keepPerPack();
  let added = 0;
  for (const id of batteryIds) {
    const newest = await newestTime(id);
    const params = { battery_id: id, limit: String(keep), newest: "1" };
    if (newest !== null) params.since = new Date(newest + 1).toISOString();
    const body = await gw.history(params);
    added += await addSamples(body.samples || []);
  }
  return added;
}

/**
 * The direct-mode data: one WebSocket to /local/v1/live, the packs' latest values (kept in IndexedDB with
 * their source and time), listeners for views. ``start()`` while in direct mode, ``stop()`` otherwise.
 */
export class Direct {
  constructor() {
    this.packs = new Map(); // battery_id → {battery_id, latest, link_state, last_error, source, received, ...}
    this.gateway = null; // the gateway part of the last state
    this.listeners = new Set();
    this.ws = null;
    this.stopped = true;
    this.connected = false;
    this.retryMs = 1000;
  }

  async loadKept() {
    for (const e of await allLatest()) if (!this.packs.has(e.battery_id)) this.packs.set(e.battery_id, e);
    this.emit({ type: "packs" });
  }

  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(msg) {
    for (const fn of this.listeners) {
      try {
        fn(msg);
      } catch (err) {
        console.error("direct listener failed", err);
      }
    }
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.#connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
    this.ws = null;
    this.#setConnected(false);
  }

  #setConnected(on) {
    if (this.connected === on) return;
    this.connected = on;
    this.emit({ type: "connection", connected: on });
  }

  /** A pack's values from `source` ("lan" or "ble"): merged field by field, remembered with their time. */
  take(batteryId, sample, source, extra = {}) {
    const prev = this.packs.get(batteryId) || { battery_id: batteryId };
    const entry = { ...prev, ...extra, latest: { ...(prev.latest || {}), ...sample }, source, received: Date.now() };
    this.packs.set(batteryId, entry);
    putLatest(entry).catch((err) => console.warn("latest not kept", err));
    if (source !== "lan") this.emit({ type: "sample", battery_id: batteryId, source });
    return entry;
  }

  /** Ask the gateway for its state now (queue depth, uplinks: they change without a live event). */
  async refreshState() {
    this.#applyState(await gw.state(), false);
  }

  #applyState(body, fetchHistory = true) {
    this.gateway = body.gateway || null;
    for (const b of body.batteries || []) {
      const { latest, ...status } = b;
      if (latest) this.take(b.battery_id, latest, "lan", status);
      else this.packs.set(b.battery_id, { ...(this.packs.get(b.battery_id) || {}), ...status });
    }
    this.emit({ type: "state", gateway: this.gateway });
    if (!fetchHistory) return;
    backfill((body.batteries || []).map((b) => b.battery_id))
      .then((n) => n && this.emit({ type: "history" }))
      .catch((err) => console.warn("history not fetched", err));
  }

  #connect() {
    if (this.stopped) return;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(withToken(`${proto}://${location.host}/local/v1/live`));
    this.ws = ws;
    ws.onopen = () => {
      this.retryMs = 1000;
      this.#setConnected(true);
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg.type === "state") this.#applyState(msg);
      else if (msg.type === "sample") {
        // "latest" is the gateway's merged view; "sample" the reading as taken (kept for the charts)
        this.take(msg.battery_id, msg.latest || msg.sample, "lan");
        addSamples([msg.sample]).then(() => this.emit({ type: "history", battery_id: msg.battery_id }))
          .catch((err) => console.warn("point not kept", err));
      } else if (msg.type === "link") {
        const prev = this.packs.get(msg.battery_id) || { battery_id: msg.battery_id };
        this.packs.set(msg.battery_id, { ...prev, ...msg.status });
      } else if (msg.type === "uplink" && this.gateway) {
        this.gateway = { ...this.gateway, uplink: msg.uplink };
      } else if (msg.type === "via" && this.gateway) {
        this.gateway = { ...this.gateway, via: msg.via, delivered_ts: msg.ts };
      }
      this.emit(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.#setConnected(false);
      if (this.stopped) return;
      this.timer = setTimeout(() => this.#connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 10000);
    };
  }
}

export const direct = new Direct();
