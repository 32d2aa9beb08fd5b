// The pack page's Health card: the analytics engine's SOH (with confidence and the segments behind it),
// resistance and its trend at 25 °C, SOC drift, weak cells with their evidence plotted (the cell's SOC
// against the pack's at each anchor), and the pack's active alarms. Charts: uPlot (vendored).

import { api } from "./api.js";
import { alarmText } from "./alarms.js";
import { chartDate, dateTime, num, t, tn } from "./i18n.js";
import { fill, h } from "./util.js";

export function healthCard(batteryId) {
  const body = h("div.health-body", h("p.muted", t("common.loading")));
  const card = h("section.card.health-card#health-card", h("h2", t("health.card.title")), body);
  load().catch((err) => fill(body, h("p.muted", t("health.card.unavailable", { error: err.message }))));
  return card;

  async function load() {
    const r = await api.health(batteryId);
    const hl = r.health;
    const alarms = r.alarms || [];
    const alarmList = alarms.length
      ? h("ul.alarm-list", alarms.map((a) => h(`li.sev-${a.severity}`, { dataset: { rule: a.rule_id }, title: a.message }, alarmText(a))))
      : h("p.muted", t("alarms.none_active"));
    if (!hl) return fill(body, h("p.muted", r.reason || t("health.card.not_analysed")), alarmList);
    const why = hl.reasons || {};
    const cap = hl.capacity || {};
    const res = hl.resistance || {};
    const kv = (label, value, reason, id) =>
      h("div.kv", { dataset: { metric: id } }, h("span.k", label), h("span.v", value), reason ? h("span.muted.why", reason) : null);
    const findings = (hl.findings || []).map((f) =>
      h(
        `li.finding.finding-${f.kind}`,
        { dataset: { kind: f.kind, cell: f.cell ?? "" }, title: f.message },
        h("strong", findingText(f)),
        evidenceList(f),
        f.evidence?.offsets?.length
          ? plot(`weak-cell-${f.cell}`, t("health.card.offset_chart", { n: f.cell }), "%", 2, f.evidence.offsets, "#c62828")
          : null,
      ),
    );
    const trend = hl.resistance_history || [];
    fill(
      body,
      h(
        "div.kvs",
        kv(t("health.card.soh"), hl.soh_pct != null ? `${num(hl.soh_pct, 1)} %` : "–",
          hl.soh_pct != null ? t("health.card.soh_why", { confidence: t(`health.confidence.${cap.confidence}`), segments: tn("health.card.segments", cap.segments ?? 0), charges: tn("health.card.full_charges", hl.full_charge_anchors ?? 0) }) : why.soh_pct || why.capacity_ah, "soh"),
        kv(t("health.card.capacity"), hl.capacity_ah != null ? `${num(hl.capacity_ah, 1)} Ah` : "–", null, "capacity"),
        kv(t("health.card.resistance"), hl.resistance_mohm != null ? `${num(hl.resistance_mohm, 2)} mΩ` : "–",
          hl.resistance_mohm != null ? tn("health.card.resistance_why", res.windows ?? 0) : why.resistance_mohm, "resistance"),
        kv(t("health.card.soc"), `${pct(hl.soc_pct)} / ${pct(hl.bms_soc_pct)}`,
          hl.bms_soc_error_pct != null ? t("health.card.soc_why", { points: num(hl.bms_soc_error_pct, 1) }) : why.soc_pct, "soc"),
        kv(t("health.card.weak_cells"), hl.weak_cells?.length ? hl.weak_cells.map((c) => t("alarms.cell", { n: c })).join(", ") : t("health.card.none_found"), null, "weak"),
      ),
      trend.length
        ? plot("resistance-trend", t("health.card.resistance_trend"), "mΩ", 3, trend, "#0f5d8c")
        : h("p.muted.no-trend", t("health.card.no_trend")),
      findings.length ? h("ul.findings", findings) : null,
      h("h3", t("health.card.active_alarms")),
      alarmList,
    );
  }
}

/** "80.0 %", or "–" alone when unknown (not "– %") */
const pct = (value) => (value === null || value === undefined ? "–" : `${num(value, 1)} %`);

/** -value, keeping "unknown" unknown (-null is 0 in JavaScript) */
const neg = (value) => (value === null || value === undefined ? null : -value);
const signed = (value, digits) => (Number(value) > 0 ? "+" : "") + num(value, digits);

/** A finding in the interface's language, from its kind and figures (the engine's own text, in English, is
 *  the item's tooltip, and what an unknown kind shows). */
function findingText(f) {
  const ev = f.evidence || {};
  const params = { n: f.cell };
  switch (f.kind) {
    case "weak_cell_self_discharge":
      Object.assign(params, { rate: num(neg(ev.rate_pct_month), 1), drop: num(neg(ev.drop_pct), 2), hours: num(ev.observed_h, 0) });
      break;
    case "weak_cell_low_capacity":
      Object.assign(params, { capacity: num(ev.capacity_ah, 1), under: num(100 * (1 - ev.capacity_ah / ev.median_ah), 0) });
      break;
    case "weak_cell_high_resistance":
      Object.assign(params, { resistance: num(ev.resistance_mohm, 2), ratio: num(ev.resistance_mohm / ev.median_mohm, 1) });
      break;
    case "soc_drift":
      // the command is typed as it is shown: a plain number, never the locale's decimal comma
      Object.assign(params, { bms: num(ev.bms_soc_pct, 1), soc: num(ev.soc_pct, 1), command: `trackingbms set PORT --soc ${ev.soc_pct}` });
      break;
    case "soc_rate_mismatch":
      Object.assign(params, {
        since: fmtTime(ev.anchored_at),
        bms: signed(ev.bms_soc_moved_pct, 1),
        counted: signed(ev.counted_soc_moved_pct, 1),
        hours: num(ev.hours, 1),
      });
      break;
    default:
      return f.message;
  }
  return t(`health.finding.${f.kind}`, params);
}

/** The figures a finding rests on, labelled (the plotted offsets and the fit's internals left out). */
const EVIDENCE = {
  weak_cell_self_discharge: [
    ["rate", (ev) => `${num(neg(ev.rate_pct_month), 2)} ± ${num(ev.rate_se_pct_month, 2)} %/${t("health.evidence.month")}`],
    ["halves", (ev) => `${num(neg(ev.first_half_rate_pct_month), 2)} / ${num(neg(ev.second_half_rate_pct_month), 2)} %/${t("health.evidence.month")}`],
    ["observed", (ev) => `${num(ev.observed_h, 0)} h`],
    ["pairs", (ev) => num(ev.pairs, 0)],
    ["bleed", (ev) => `${num(ev.bleed_added_pct, 2)} %`],
  ],
  weak_cell_low_capacity: [
    ["capacity", (ev) => `${num(ev.capacity_ah, 2)} Ah`],
    ["median_capacity", (ev) => `${num(ev.median_ah, 2)} Ah`],
    ["segments", (ev) => num(ev.segments, 0)],
  ],
  weak_cell_high_resistance: [
    ["resistance", (ev) => `${num(ev.resistance_mohm, 3)} mΩ`],
    ["median_resistance", (ev) => `${num(ev.median_mohm, 3)} mΩ`],
    ["windows", (ev) => num(ev.windows, 0)],
  ],
  soc_drift: [["anchored_at", (ev) => fmtTime(ev.anchored_at)]],
  soc_rate_mismatch: [["anchored_at", (ev) => fmtTime(ev.anchored_at)]],
};

function evidenceList(f) {
  const shown = EVIDENCE[f.kind];
  const ev = f.evidence || {};
  if (!shown) return null;
  const items = shown.flatMap(([key, show]) => {
    const text = show(ev);
    return text.includes("–") || text.includes("NaN") ? [] : [h("dt", t(`health.evidence.${key}`)), h("dd", text)];
  });
  return items.length ? h("dl.evidence", items) : null;
}

function fmtTime(iso) {
  return iso ? dateTime(Date.parse(iso)) : "–";
}

/** A small time chart of ``points`` ([ISO time, value], …): a figure whose ``data-points`` says how many
 * points it draws (the browser tests compare it with the API). */
function plot(id, title, unit, digits, points, color) {
  const el = h("div.chart-plot");
  const box = h(`figure.chart.health-chart#chart-${id}`, { dataset: { points: String(points.length) } }, h("figcaption", `${title} (${unit})`), el);
  if (!window.uPlot) {
    el.append(h("p.muted", t("chart.unavailable")));
    return box;
  }
  const xs = points.map(([ts]) => Date.parse(ts) / 1000);
  const ys = points.map(([, v]) => v);
  const fmtv = (u, v) => (v === null || v === undefined ? "–" : `${num(v, digits)} ${unit}`);
  // drawn once the figure is in the page (uPlot needs its width)
  requestAnimationFrame(() => {
    const width = Math.max(200, Math.floor(el.clientWidth || 480));
    new window.uPlot(
      {
        width,
        height: 150,
        fmtDate: chartDate,
        legend: { show: true, live: true },
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: { time: true },
          y: { range: (u, lo, hi) => (lo === null || hi === null ? [0, 1] : [lo - Math.max((hi - lo) * 0.1, 0.05), hi + Math.max((hi - lo) * 0.1, 0.05)]) },
        },
        axes: [
          { stroke: "#5b6670", grid: { stroke: "#e6e9ec" }, ticks: { stroke: "#e6e9ec" } },
          { stroke: "#5b6670", size: 56, grid: { stroke: "#e6e9ec" }, ticks: { stroke: "#e6e9ec" } },
        ],
        series: [{ label: t("chart.time") }, { label: title, stroke: color, width: 1.6, value: fmtv, points: { show: true, size: 4 } }],
      },
      [xs, ys],
      el,
    );
    box.dataset.drawn = "1";
  });
  return box;
}
