// Small helpers: DOM building, number and time formatting, fault texts, connectivity labels.

import { dateTime, faultName, num, t as tr } from "./i18n.js";

/** h("div.card#x", {onclick}, child, ...) builds an element; strings become text nodes (never HTML). */
export function h(spec, attrs, ...children) {
  const m = /^([a-z0-9-]*)((?:[.#][\w-]+)*)$/i.exec(spec) || ["", "div", ""];
  const el = document.createElement(m[1] || "div");
  for (const part of m[2].match(/[.#][\w-]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs !== null && attrs !== undefined &&
      (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

/** Replace an element's children; null / false children are skipped (replaceChildren would print "null"). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function fmt(value, digits = 1, unit = "") {
  const s = num(value, digits);
  return unit && s !== "–" ? `${s} ${unit}` : s;
}

export function fmtPower(w) {
  if (w === null || w === undefined) return "–";
  return Math.abs(w) >= 1000 ? `${num(w / 1000, 2)} kW` : `${num(w, 0)} W`;
}

export function parseTs(ts) {
  if (!ts) return null;
  const t = typeof ts === "number" ? ts * 1000 : Date.parse(ts);
  return Number.isNaN(t) ? null : t;
}

export function ago(ts, now = Date.now()) {
  const t = parseTs(ts);
  if (t === null) return tr("time.never");
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 5) return tr("time.just_now");
  if (s < 60) return tr("time.ago_s", { n: num(s, 0) });
  if (s < 3600) return tr("time.ago_min", { n: num(Math.floor(s / 60), 0) });
  if (s < 86400) return tr("time.ago_h", { n: num(Math.floor(s / 3600), 0) });
  return tr("time.ago_d", { n: num(Math.floor(s / 86400), 0) });
}

export function fmtTime(ts) {
  const t = parseTs(ts);
  return t === null ? "–" : dateTime(t);
}

export function fmtDuration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.round(s);
  if (s < 60) return `${num(s, 0)} s`;
  if (s < 3600) return `${num(Math.floor(s / 60), 0)} min ${s % 60} s`;
  if (s < 86400) return `${num(Math.floor(s / 3600), 0)} h ${Math.floor((s % 3600) / 60)} min`;
  return tr("time.d_h", { d: num(Math.floor(s / 86400), 0), h: Math.floor((s % 86400) / 3600) });
}

export const CONNECTIVITY = {
  online: { label: "conn.online", cls: "ok" },
  asleep: { label: "conn.asleep", cls: "sleep" },
  "link-down": { label: "conn.link_down", cls: "warn" },
  offline: { label: "conn.offline", cls: "bad" },
  backfilling: { label: "conn.backfilling", cls: "info" },
};

export function connectivityBadge(conn) {
  const c = CONNECTIVITY[conn];
  return h(`span.badge.conn-${c ? c.cls : "muted"}`, { dataset: { connectivity: conn || "" } },
    c ? tr(c.label) : conn || tr("common.unknown"));
}

/** "cell_voltage_high_l2" → the fault table's text in the current language, or "Cell voltage high (alarm)"
 * made from the name when the table does not know it. */
export function faultText(name) {
  const known = faultName(name);
  if (known) return known;
  const m = /^(.*?)(?:_l([12]))?$/.exec(name);
  let text = m[1].replace(/_/g, " ");
  text = text.charAt(0).toUpperCase() + text.slice(1);
  if (m[2] === "1") text += ` (${tr("fault.level1")})`;
  if (m[2] === "2") text += ` (${tr("fault.level2")})`;
  return text;
}

/** Level 2 (protection) faults and hardware faults are errors; level 1 are warnings. */
export function faultLevel(name) {
  return /_l1$/.test(name) ? "warn" : "bad";
}

/** The derived values a FleetItem carries, recomputed from a live sample. */
export function derive(sample) {
  const out = {};
  const cells = sample.cells_mv;
  if (Array.isArray(cells) && cells.length) {
    out.cell_min_mv = Math.min(...cells);
    out.cell_max_mv = Math.max(...cells);
    out.cell_delta_mv = out.cell_max_mv - out.cell_min_mv;
  }
  if (typeof sample.voltage_v === "number" && typeof sample.current_a === "number") {
    out.power_w = sample.voltage_v * sample.current_a;
  }
  return out;
}

export function stateLabel(state) {
  return ["charging", "discharging", "idle"].includes(state) ? tr(`state.${state}`) : "–";
}

/** Where a value came from: "server", "lan" (direct, the gateway's LAN API) or "ble" (direct Bluetooth). */
export const SOURCES = {
  server: { label: "source.server", attr: "server" },
  lan: { label: "source.lan", attr: "direct-lan" },
  ble: { label: "source.ble", attr: "direct-ble" },
};

/** "direct LAN · 4 s ago": the source of a value and its age (refreshed by refreshAges). */
export function sourceTag(source, ts) {
  const s = SOURCES[source] || SOURCES.server;
  return h(
    "span.source",
    { dataset: { source: s.attr, ts: ts || "" }, title: fmtTime(ts) },
    h("span.source-name", tr(s.label)),
    " · ",
    h("span.ago", { dataset: { ts: ts || "" } }, ago(ts)),
  );
}

/** Refresh every ".ago" age under `root` (views call it each second). */
export function refreshAges(root) {
  for (const el of root.querySelectorAll(".ago")) el.textContent = ago(el.dataset.ts);
}
