// Alarm rules page: the built-in rules with the tenant's values, overrides per site or battery;
// admins and operators edit, viewers read.

import { api, getUser } from "./api.js";
import { num, ruleName, t } from "./i18n.js";
import { fill, h } from "./util.js";

const FIELDS = [
  ["set", "rules.col.set", "number"],
  ["clear", "rules.col.clear", "number"],
  ["set_delay_s", "rules.col.set_delay", "number"],
  ["clear_delay_s", "rules.col.clear_delay", "number"],
  ["repeat_s", "rules.col.repeat", "number"],
];

export async function renderRules(root) {
  const user = getUser();
  const canWrite = user && (user.role === "admin" || user.role === "operator");
  const body = h("tbody#rules-body");
  const overridesBody = h("tbody#overrides-body");
  const note = h("p.muted#rules-note");
  // the table shows LFP's cell-voltage thresholds: a battery registered with another chemistry starts from its own
  const chemistryNote = h("p.muted#rules-chemistry");
  root.replaceChildren(
    h(
      "section.rules",
      h("h1", t("rules.title")),
      h("p.muted", t("rules.intro")),
      canWrite ? null : h("p.muted", t("rules.read_only")),
      note,
      chemistryNote,
      h("section.card", h("div.scroll-x", h("table.alarm-table.rules-table",
        h("thead", h("tr", [t("rules.col.rule"), t("rules.col.metric"), t("rules.col.op"), ...FIELDS.map((f) => t(f[1])), t("alarms.col.severity"),
          t("rules.col.enabled"), ""].map((c) => h("th", c)))),
        body))),
      h("section.card", h("h2", t("rules.overrides")), h("div.scroll-x", h("table.alarm-table",
        h("thead", h("tr", [t("rules.col.rule"), t("rules.col.scope"), t("rules.col.changes"), ""].map((c) => h("th", c)))), overridesBody))),
    ),
  );

  async function load() {
    const rules = await api.rules();
    const byChem = rules.builtin_by_chemistry || {};
    const limits = Object.entries(byChem)
      .filter(([chem]) => chem !== "lfp")
      .map(([chem, r]) => t("rules.chemistry_limits", {
        chemistry: chem.toUpperCase(),
        high: num(r.cell_voltage_high?.set, 0),
        low: num(r.cell_voltage_low?.set, 0),
      }));
    chemistryNote.textContent = limits.length ? `${t("rules.chemistry_note")} ${limits.join(" · ")}` : "";
    const tenantRow = (id) => rules.overrides.find((o) => o.rule_id === id && o.scope === "tenant");
    fill(body, rules.builtin.map((r) => ruleRow(r, tenantRow(r.id))));
    fill(overridesBody, rules.overrides.length
      ? rules.overrides.map((o) => h("tr", { dataset: { overrideId: String(o.id) } },
        h("td", { title: o.rule_id }, ruleName(o.rule_id, o.title || o.rule_id)),
        h("td", o.scope === "tenant" ? t("rules.scope.tenant") : `${t(`rules.scope.${o.scope}`)}: ${o.site || o.battery_id}`),
        h("td", Object.entries(o).filter(([k, v]) => v !== null && [...FIELDS.map((f) => f[0]), "severity", "enabled", "op", "metric"].includes(k))
          .map(([k, v]) => `${k}=${v}`).join(", ")),
        h("td", canWrite ? h("button.delete", { type: "button", onclick: () => remove(o.id) }, t("rules.remove")) : null)))
      : h("tr", h("td", { colSpan: 4 }, t("rules.no_overrides"))));
  }

  function ruleRow(r, o) {
    const eff = { ...r, ...Object.fromEntries(Object.entries(o || {}).filter(([, v]) => v !== null)) };
    const inputs = {};
    const cells = FIELDS.map(([k, , type]) => {
      inputs[k] = h(`input.rule-${k}`, { type, step: "any", value: eff[k] ?? "", disabled: !canWrite, "aria-label": `${r.id} ${k}` });
      return h("td", inputs[k]);
    });
    const sev = h("select.rule-severity", { disabled: !canWrite, "aria-label": `${r.id} severity` },
      ["info", "warning", "critical"].map((s) => h("option", { value: s, selected: s === eff.severity }, t(`severity.${s}`))));
    const enabled = h("input.rule-enabled", { type: "checkbox", checked: o ? o.enabled : true, disabled: !canWrite, "aria-label": `${r.id} enabled` });
    const save = canWrite ? h("button.save", { type: "button", onclick: () => saveRule(r, o, inputs, sev, enabled) }, t("rules.save")) : null;
    return h("tr", { dataset: { rule: r.id } }, h("td", { title: r.id }, ruleName(r.id, r.title || r.id)), h("td", r.metric), h("td", r.op), cells, h("td", sev), h("td", enabled), h("td", save));
  }

  async function saveRule(r, o, inputs, sev, enabled) {
    const change = { severity: sev.value, enabled: enabled.checked };
    for (const [k] of FIELDS) {
      const v = inputs[k].value.trim();
      if (v !== "" && Number(v) !== r[k]) change[k] = Number(v);
    }
    let message;
    try {
      if (o) await api.updateRule(o.id, change);
      else await api.createRule({ rule_id: r.id, ...change });
      message = t("rules.saved", { rule: r.id });
    } catch (err) {
      message = t("rules.not_saved", { error: err.message });
    }
    await load(); // the message after the table is redrawn: what it says is what the table shows
    note.textContent = message;
  }

  async function remove(id) {
    let message;
    try {
      await api.deleteRule(id);
      message = t("rules.removed");
    } catch (err) {
      message = t("rules.not_removed", { error: err.message });
    }
    await load();
    note.textContent = message;
  }

  await load();
}
