// History on the phone: the samples seen in direct mode, kept in IndexedDB so that charts and the last
// values survive a reload with no network. IndexedDB is per origin: what a gateway-served app keeps is
// visible only to the app served by that same gateway address (docs/architecture.md, "Direct mode").
//
// Hand-written over the raw IndexedDB API (a few promises) rather than a wrapper library: the app has no
// build step and vendors only what it must (uPlot).

import { done, openDb, req } from "./idb.js";

const DB_NAME = "tbms-direct";
const DB_VERSION = 1;
const KEEP_KEY = "tbms.direct.keep";
/** The default number of points kept per pack (the floor); the gateway page can raise it. */
export const DEFAULT_KEEP = 1000;

let dbPromise = null;

function open() {
  if (!dbPromise) {
    dbPromise = openDb(DB_NAME, DB_VERSION, (db) => {
      // one point per sample: [battery_id, seq] is unique per gateway (seq never reused)
      const points = db.createObjectStore("points", { keyPath: ["battery_id", "seq"] });
      points.createIndex("by_ts", ["battery_id", "t"]);
      // the merged latest values of each pack, with where they came from and when
      db.createObjectStore("latest", { keyPath: "battery_id" });
    });
  }
  return dbPromise;
}

/** How many points per pack are kept (at least DEFAULT_KEEP unless set lower on purpose). */
export function keepPerPack() {
  const n = Number.parseInt(localStorage.getItem(KEEP_KEY) || "", 10);
  return Number.isFinite(n) && n >= 10 ? n : DEFAULT_KEEP;
}

export function setKeepPerPack(n) {
  localStorage.setItem(KEEP_KEY, String(Math.max(10, Math.min(100000, Math.round(n)))));
}

function stats(cells, temps) {
  const out = {};
  if (Array.isArray(cells) && cells.length) out.cell_delta_mv = Math.max(...cells) - Math.min(...cells);
  if (Array.isArray(temps) && temps.length) {
    out.temp_max_c = Math.max(...temps);
    out.temp_min_c = Math.min(...temps);
  }
  return out;
}

/** The chartable part of a wire sample (what the charts draw), small enough to keep thousands. */
export function toPoint(sample) {
  const t = Date.parse(sample.ts);
  if (!sample.battery_id || !Number.isInteger(sample.seq) || Number.isNaN(t)) return null;
  const p = { battery_id: sample.battery_id, seq: sample.seq, t };
  for (const k of ["voltage_v", "current_a", "soc_pct"]) if (typeof sample[k] === "number") p[k] = sample[k];
  return Object.assign(p, stats(sample.cells_mv, sample.temps_c));
}

/** Store samples (as the gateway sends them); trims each pack touched to the newest keepPerPack(). */
export async function addSamples(samples) {
  const points = samples.map(toPoint).filter(Boolean);
  if (!points.length) return 0;
  const db = await open();
  const tx = db.transaction("points", "readwrite");
  const store = tx.objectStore("points");
  for (const p of points) store.put(p);
  await done(tx);
  for (const id of new Set(points.map((p) => p.battery_id))) await trim(id);
  return points.length;
}

async function trim(batteryId) {
  const keep = keepPerPack();
  const db = await open();
  const tx = db.transaction("points", "readwrite");
  const index = tx.objectStore("points").index("by_ts");
  const range = IDBKeyRange.bound([batteryId, -Infinity], [batteryId, Infinity]);
  const n = await req(index.count(range));
  let extra = n - keep;
  if (extra > 0) {
    // oldest first: delete until only the newest `keep` are left
    await new Promise((resolve, reject) => {
      const cur = index.openCursor(range);
      cur.onsuccess = () => {
        const c = cur.result;
        if (!c || extra <= 0) return resolve();
        c.delete();
        extra -= 1;
        c.continue();
      };
      cur.onerror = () => reject(cur.error);
    });
  }
  await done(tx);
}

/** A pack's kept points, oldest first. */
export async function points(batteryId) {
  const db = await open();
  const tx = db.transaction("points");
  const range = IDBKeyRange.bound([batteryId, -Infinity], [batteryId, Infinity]);
  return req(tx.objectStore("points").index("by_ts").getAll(range));
}

/** Newest kept time of a pack (ms), or null: where the next backfill from the gateway starts. */
export async function newestTime(batteryId) {
  const db = await open();
  const tx = db.transaction("points");
  const range = IDBKeyRange.bound([batteryId, -Infinity], [batteryId, Infinity]);
  const cur = await req(tx.objectStore("points").index("by_ts").openCursor(range, "prev"));
  return cur ? cur.value.t : null;
}

export async function countPoints(batteryId) {
  const db = await open();
  const range = IDBKeyRange.bound([batteryId, -Infinity], [batteryId, Infinity]);
  return req(db.transaction("points").objectStore("points").index("by_ts").count(range));
}

/** Remember a pack's latest values: {battery_id, latest, link_state, source, received} (received: ms). */
export async function putLatest(entry) {
  const db = await open();
  const tx = db.transaction("latest", "readwrite");
  tx.objectStore("latest").put(entry);
  await done(tx);
}

export async function allLatest() {
  const db = await open();
  return req(db.transaction("latest").objectStore("latest").getAll());
}

/** The kept points as the server's history shape, for charts.js: {t: [s], bucket_s, series}. */
export function toHistory(list, pollS = 1) {
  const hist = { t: [], bucket_s: pollS, series: {} };
  const cols = {
    voltage_v: "mean",
    current_a: "mean",
    soc_pct: "mean",
    cell_delta_mv: "max",
    temp_max_c: "max",
    temp_min_c: "min",
  };
  for (const [name, agg] of Object.entries(cols)) hist.series[name] = { [agg]: [] };
  for (const p of list) {
    hist.t.push(p.t / 1000);
    for (const [name, agg] of Object.entries(cols)) hist.series[name][agg].push(p[name] ?? null);
  }
  // gaps: a sample missing for longer than a few poll intervals (charts.js splits lines there)
  if (list.length > 2) {
    const gaps = [];
    for (let i = 1; i < list.length; i++) gaps.push(list[i].t - list[i - 1].t);
    gaps.sort((a, b) => a - b);
    hist.bucket_s = Math.max(pollS, gaps[Math.floor(gaps.length / 2)] / 1000);
  }
  return hist;
}
