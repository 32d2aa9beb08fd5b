// Alarm rules page: the built-in rules with the tenant's values, overrides per site or battery;
// admins and operators edit, viewers read.

import { api, getUser } from "./api.js";
import { fill, h } from "./util.js";

const FIELDS = [
  ["set", "Set", "number"],
  ["clear", "Clear", "number"],
  ["set_delay_s", "Set delay (s)", "number"],
  ["clear_delay_s", "Clear delay (s)", "number"],
  ["repeat_s", "Repeat (s)", "number"],
];

export async function renderRules(root) {
  const user = getUser();
  const canWrite = user && (user.role === "admin" || user.role === "operator");
  const body = h("tbody#rules-body");
  const overridesBody = h("tbody#overrides-body");
  const note = h("p.muted#rules-note");
  root.replaceChildren(
    h(
      "section.rules",
      h("h1", "Alarm rules"),
      h("p.muted", "Each alarm is raised when its metric passes Set for the set delay, and clears once back past Clear for the clear delay. ",
        "Fault bits of the BMS each have their own rule (fault:<name>). Values here apply to the whole tenant; overrides per site or pack are listed below."),
      canWrite ? null : h("p.muted", "You can read the rules; admins and operators change them."),
      note,
      h("section.card", h("table.alarm-table.rules-table",
        h("thead", h("tr", ["Rule", "Metric", "Op", ...FIELDS.map((f) => f[1]), "Severity", "Enabled", ""].map((t) => h("th", t)))),
        body)),
      h("section.card", h("h2", "Overrides"), h("table.alarm-table",
        h("thead", h("tr", ["Rule", "Scope", "Changes", ""].map((t) => h("th", t)))), overridesBody)),
    ),
  );

  async function load() {
    const rules = await api.rules();
    const tenantRow = (id) => rules.overrides.find((o) => o.rule_id === id && o.scope === "tenant");
    fill(body, rules.builtin.map((r) => ruleRow(r, tenantRow(r.id))));
    fill(overridesBody, rules.overrides.length
      ? rules.overrides.map((o) => h("tr", { dataset: { overrideId: String(o.id) } },
        h("td", o.rule_id),
        h("td", o.scope === "tenant" ? "tenant" : `${o.scope}: ${o.site || o.battery_id}`),
        h("td", Object.entries(o).filter(([k, v]) => v !== null && [...FIELDS.map((f) => f[0]), "severity", "enabled", "op", "metric"].includes(k))
          .map(([k, v]) => `${k}=${v}`).join(", ")),
        h("td", canWrite ? h("button.delete", { type: "button", onclick: () => remove(o.id) }, "Remove") : null)))
      : h("tr", h("td", { colSpan: 4 }, "No overrides: the built-in values apply.")));
  }

  function ruleRow(r, o) {
    const eff = { ...r, ...Object.fromEntries(Object.entries(o || {}).filter(([, v]) => v !== null)) };
    const inputs = {};
    const cells = FIELDS.map(([k, , type]) => {
      inputs[k] = h(`input.rule-${k}`, { type, step: "any", value: eff[k] ?? "", disabled: !canWrite, "aria-label": `${r.id} ${k}` });
      return h("td", inputs[k]);
    });
    const sev = h("select.rule-severity", { disabled: !canWrite, "aria-label": `${r.id} severity` },
      ["info", "warning", "critical"].map((s) => h("option", { value: s, selected: s === eff.severity }, s)));
    const enabled = h("input.rule-enabled", { type: "checkbox", checked: o ? o.enabled : true, disabled: !canWrite, "aria-label": `${r.id} enabled` });
    const save = canWrite ? h("button.save", { type: "button", onclick: () => saveRule(r, o, inputs, sev, enabled) }, "Save") : null;
    return h("tr", { dataset: { rule: r.id } }, h("td", r.title || r.id), h("td", r.metric), h("td", r.op), cells, h("td", sev), h("td", enabled), h("td", save));
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
      message = `Saved ${r.id}.`;
    } catch (err) {
      message = `Not saved: ${err.message}`;
    }
    await load(); // the message after the table is redrawn: what it says is what the table shows
    note.textContent = message;
  }

  async function remove(id) {
    let message;
    try {
      await api.deleteRule(id);
      message = "Override removed.";
    } catch (err) {
      message = `Not removed: ${err.message}`;
    }
    await load();
    note.textContent = message;
  }

  await load();
}
