// The pack page's Health card: the analytics engine's SOH (with confidence and the segments behind it),
// resistance, SOC drift, weak cells with their evidence, and the pack's active alarms.

import { api } from "./api.js";
import { fill, fmt, h } from "./util.js";

export function healthCard(batteryId) {
  const body = h("div.health-body", h("p.muted", "Loading…"));
  const card = h("section.card.health-card#health-card", h("h2", "Health"), body);
  load().catch((err) => fill(body, h("p.muted", `Health not available: ${err.message}`)));
  return card;

  async function load() {
    const r = await api.health(batteryId);
    const hl = r.health;
    const alarms = r.alarms || [];
    const alarmList = alarms.length
      ? h("ul.alarm-list", alarms.map((a) => h(`li.sev-${a.severity}`, { dataset: { rule: a.rule_id } }, a.message)))
      : h("p.muted", "No active alarms.");
    if (!hl) return fill(body, h("p.muted", r.reason || "Not analysed yet."), alarmList);
    const why = hl.reasons || {};
    const cap = hl.capacity || {};
    const res = hl.resistance || {};
    const kv = (label, value, reason, id) =>
      h("div.kv", { dataset: { metric: id } }, h("span.k", label), h("span.v", value), reason ? h("span.muted.why", reason) : null);
    const findings = (hl.findings || []).map((f) =>
      h(
        `li.finding.finding-${f.kind}`,
        { dataset: { kind: f.kind, cell: f.cell ?? "" } },
        h("strong", f.message),
        f.evidence && Object.keys(f.evidence).length
          ? h("dl.evidence", Object.entries(f.evidence).flatMap(([k, v]) => [h("dt", k), h("dd", typeof v === "object" ? JSON.stringify(v) : String(v))]))
          : null,
      ),
    );
    fill(
      body,
      h(
        "div.kvs",
        kv("State of health", hl.soh_pct != null ? `${fmt(hl.soh_pct, 1)} %` : "–",
          hl.soh_pct != null ? `confidence ${cap.confidence}, ${cap.segments} segment${cap.segments === 1 ? "" : "s"}, ${hl.full_charge_anchors} full charges` : why.soh_pct || why.capacity_ah, "soh"),
        kv("Capacity", hl.capacity_ah != null ? `${fmt(hl.capacity_ah, 1)} Ah` : "–", null, "capacity"),
        kv("Resistance", hl.resistance_mohm != null ? `${fmt(hl.resistance_mohm, 2)} mΩ` : "–",
          hl.resistance_mohm != null ? `${res.windows} windows, at 25 °C` : why.resistance_mohm, "resistance"),
        kv("SOC (engine / BMS)", `${fmt(hl.soc_pct, 1)} % / ${fmt(hl.bms_soc_pct, 1)} %`,
          hl.bms_soc_error_pct != null ? `BMS off by ${fmt(hl.bms_soc_error_pct, 1)} points` : why.soc_pct, "soc"),
        kv("Weak cells", hl.weak_cells?.length ? hl.weak_cells.map((c) => `cell ${c}`).join(", ") : "none found", null, "weak"),
      ),
      findings.length ? h("ul.findings", findings) : null,
      h("h3", "Active alarms"),
      alarmList,
    );
  }
}
