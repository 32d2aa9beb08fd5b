// Small helpers: DOM building, number and time formatting, fault texts, connectivity labels.

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
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const s = Number(value).toFixed(digits);
  return unit ? `${s} ${unit}` : s;
}

export function fmtPower(w) {
  if (w === null || w === undefined) return "–";
  return Math.abs(w) >= 1000 ? `${(w / 1000).toFixed(2)} kW` : `${Math.round(w)} W`;
}

export function parseTs(ts) {
  if (!ts) return null;
  const t = typeof ts === "number" ? ts * 1000 : Date.parse(ts);
  return Number.isNaN(t) ? null : t;
}

export function ago(ts, now = Date.now()) {
  const t = parseTs(ts);
  if (t === null) return "never";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function fmtTime(ts) {
  const t = parseTs(ts);
  return t === null ? "–" : new Date(t).toLocaleString();
}

export function fmtDuration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export const CONNECTIVITY = {
  online: { label: "online", cls: "ok" },
  asleep: { label: "BMS asleep", cls: "sleep" },
  "link-down": { label: "link down", cls: "warn" },
  offline: { label: "offline", cls: "bad" },
  backfilling: { label: "backfilling", cls: "info" },
};

export function connectivityBadge(conn) {
  const c = CONNECTIVITY[conn] || { label: conn || "unknown", cls: "muted" };
  return h(`span.badge.conn-${c.cls}`, { dataset: { connectivity: conn || "" } }, c.label);
}

let faultTexts = {};

export async function loadFaultTexts() {
  try {
    const resp = await fetch("/static/faults.json");
    if (resp.ok) faultTexts = await resp.json();
  } catch {
    /* fall back to names made readable */
  }
}

/** "cell_voltage_high_l2" → the fault table's text, or "Cell voltage high (alarm)" when unknown. */
export function faultText(name) {
  if (faultTexts[name]) return faultTexts[name];
  const m = /^(.*?)(?:_l([12]))?$/.exec(name);
  let text = m[1].replace(/_/g, " ");
  text = text.charAt(0).toUpperCase() + text.slice(1);
  if (m[2] === "1") text += " (warning)";
  if (m[2] === "2") text += " (alarm)";
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
  return { charging: "charging", discharging: "discharging", idle: "idle" }[state] || "–";
}
