// Alarms page: active alarms first (acknowledge), then history; filter by site and severity.

import { api, getUser } from "./api.js";
import { ago, fill, h } from "./util.js";

const SEVERITIES = ["critical", "warning", "info"];

export async function renderAlarms(root) {
  const user = getUser();
  const canWrite = user && (user.role === "admin" || user.role === "operator");
  const siteSel = h("select#alarm-site", { "aria-label": "Site" }, h("option", { value: "" }, "All sites"));
  const sevSel = h(
    "select#alarm-severity",
    { "aria-label": "Severity" },
    h("option", { value: "" }, "All severities"),
    SEVERITIES.map((s) => h("option", { value: s }, s)),
  );
  const active = h("tbody#alarms-active");
  const history = h("tbody#alarms-history");
  const note = h("p.muted#alarms-note");
  const head = () =>
    h("thead", h("tr", ["Severity", "Pack", "Site", "Alarm", "Raised", "Acknowledged", "Cleared", ""].map((t) => h("th", t))));
  root.replaceChildren(
    h(
      "section.alarms",
      h("h1", "Alarms"),
      h("div.filters", siteSel, sevSel),
      note,
      h("section.card", h("h2", "Active"), h("table.alarm-table", head(), active)),
      h("section.card", h("h2", "History"), h("table.alarm-table", head(), history)),
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
        ? h("button.ack", { type: "button", onclick: () => acknowledge(a.id) }, "Acknowledge")
        : null;
    return h(
      `tr.alarm.sev-${a.severity}`,
      { dataset: { alarmId: String(a.id), status: a.status, rule: a.rule_id } },
      h("td", h(`span.badge.sev-${a.severity}`, a.severity)),
      h("td", h("a", { href: `#/pack/${encodeURIComponent(a.battery_id)}` }, a.battery_name || a.battery_id)),
      h("td", a.site),
      h("td.alarm-message", a.message),
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
    fill(active, act.length ? act.map(row) : h("tr", h("td", { colSpan: 8 }, "No active alarms.")));
    const past = all.filter((a) => !a.active);
    fill(history, past.length ? past.map(row) : h("tr", h("td", { colSpan: 8 }, "No past alarms.")));
  }

  async function acknowledge(id) {
    let message = "";
    try {
      await api.ack(id);
    } catch (err) {
      message = `Could not acknowledge: ${err.message}`;
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
