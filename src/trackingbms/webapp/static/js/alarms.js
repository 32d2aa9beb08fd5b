// Alarms page: active alarms first (acknowledge), then history; filter by site and severity.

import { api, getUser } from "./api.js";
import { num, ruleName, t } from "./i18n.js";
import { ago, fill, h } from "./util.js";

const SEVERITIES = ["critical", "warning", "info"];

export async function renderAlarms(root) {
  const user = getUser();
  const canWrite = user && (user.role === "admin" || user.role === "operator");
  const siteSel = h("select#alarm-site", { "aria-label": t("alarms.site") }, h("option", { value: "" }, t("alarms.all_sites")));
  const sevSel = h(
    "select#alarm-severity",
    { "aria-label": t("alarms.col.severity") },
    h("option", { value: "" }, t("alarms.all_severities")),
    SEVERITIES.map((s) => h("option", { value: s }, t(`severity.${s}`))),
  );
  const active = h("tbody#alarms-active");
  const history = h("tbody#alarms-history");
  const note = h("p.muted#alarms-note");
  const head = () =>
    h("thead", h("tr", [t("alarms.col.severity"), t("alarms.col.pack"), t("alarms.site"), t("alarms.col.alarm"), t("alarms.col.raised"),
      t("alarms.col.acknowledged"), t("alarms.col.cleared"), ""].map((c) => h("th", c))));
  root.replaceChildren(
    h(
      "section.alarms",
      h("h1", t("alarms.title")),
      h("div.filters", siteSel, sevSel),
      note,
      h("section.card", h("h2", t("alarms.active")), h("div.scroll-x", h("table.alarm-table", head(), active))),
      h("section.card", h("h2", t("alarms.history")), h("div.scroll-x", h("table.alarm-table", head(), history))),
    ),
  );
  try {
    for (const s of await api.sites()) siteSel.append(h("option", { value: s.name }, s.name));
  } catch {
    /* the list still works without the site filter */
  }

  function row(a) {
    const ack =
      a.status === "raised" && canWrite
        ? h("button.ack", { type: "button", onclick: () => acknowledge(a.id) }, t("alarms.acknowledge"))
        : null;
    return h(
      `tr.alarm.sev-${a.severity}`,
      { dataset: { alarmId: String(a.id), status: a.status, rule: a.rule_id } },
      h("td", h(`span.badge.sev-${a.severity}`, t(`severity.${a.severity}`))),
      h("td", h("a", { href: `#/pack/${encodeURIComponent(a.battery_id)}` }, a.battery_name || a.battery_id)),
      h("td", a.site),
      h("td.alarm-message", { title: a.message }, alarmText(a)),
      h("td", { title: a.raised_at }, ago(a.raised_at)),
      h("td.acked", a.acknowledged_by ? `${a.acknowledged_by}, ${ago(a.acknowledged_at)}` : "–"),
      h("td", a.cleared_at ? ago(a.cleared_at) : "–"),
      h("td", ack),
    );
  }

  async function load() {
    const params = { limit: "500" };
    if (siteSel.value) params.site = siteSel.value;
    if (sevSel.value) params.severity = sevSel.value;
    const all = await api.alarms(params);
    const act = all.filter((a) => a.active);
    fill(active, act.length ? act.map(row) : h("tr", h("td", { colSpan: 8 }, t("alarms.none_active"))));
    const past = all.filter((a) => !a.active);
    fill(history, past.length ? past.map(row) : h("tr", h("td", { colSpan: 8 }, t("alarms.none_past"))));
  }

  async function acknowledge(id) {
    let message = "";
    try {
      await api.ack(id);
    } catch (err) {
      message = t("alarms.ack_failed", { error: err.message });
    }
    await load();
    note.textContent = message;
  }

  siteSel.addEventListener("change", load);
  sevSel.addEventListener("change", load);
  await load();
  const timer = setInterval(() => load().catch(() => {}), 10000);
  return () => clearInterval(timer);
}

/** The unit of a metric, from its name's suffix (cell_spread_mv, max_temp_c, soc_pct, offline_s, …). */
const UNITS = [["_mv", "mV"], ["_c", "°C"], ["_pct", "%"], ["_s", "s"], ["_mohm", "mΩ"]];

/** The alarm in the page's language: the rule's translated name, the cell, and the server's figures
 *  ("(max_cell_mv 3652, set > 3600)") as value and threshold with their unit; a BMS fault bit or an analytics
 *  finding is on or off, so no figures. A tenant's own rule shows the server's message as is. */
export function alarmText(a) {
  const name = ruleName(a.rule_id, null);
  if (!name || name === a.rule_id) return a.message;
  const cell = a.cell ? t("alarms.cell", { n: a.cell }) : "";
  const m = /\((\S+) (\S+), set ([<>]=?) (\S+)\)\s*$/.exec(a.message || "");
  let shown = "";
  if (m && !/^(fault|finding):/.test(m[1])) {
    const [, metric, value, op, threshold] = m;
    const unit = (UNITS.find(([suffix]) => metric.endsWith(suffix)) || [, ""])[1];
    const fmt = (v) => `${num(Number(v), Number.isInteger(Number(v)) ? 0 : 1)}${unit ? ` ${unit}` : ""}`;
    shown = Number.isNaN(Number(value)) ? "" : `${fmt(value)} (${t("alarms.threshold")} ${op} ${fmt(threshold)})`;
  }
  return [name, cell, shown].filter(Boolean).join(" · ");
}
