// The pack page's Health card: the analytics engine's SOH (with confidence and the segments behind it),
// resistance, SOC drift, weak cells with their evidence, and the pack's active alarms.

import { api } from "./api.js";
import { alarmText } from "./alarms.js";
import { num, t, tn } from "./i18n.js";
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
        kv(t("health.card.soh"), hl.soh_pct != null ? `${num(hl.soh_pct, 1)} %` : "–",
          hl.soh_pct != null ? t("health.card.soh_why", { confidence: cap.confidence, segments: tn("health.card.segments", cap.segments ?? 0), charges: tn("health.card.full_charges", hl.full_charge_anchors ?? 0) }) : why.soh_pct || why.capacity_ah, "soh"),
        kv(t("health.card.capacity"), hl.capacity_ah != null ? `${num(hl.capacity_ah, 1)} Ah` : "–", null, "capacity"),
        kv(t("health.card.resistance"), hl.resistance_mohm != null ? `${num(hl.resistance_mohm, 2)} mΩ` : "–",
          hl.resistance_mohm != null ? tn("health.card.resistance_why", res.windows ?? 0) : why.resistance_mohm, "resistance"),
        kv(t("health.card.soc"), `${num(hl.soc_pct, 1)} % / ${num(hl.bms_soc_pct, 1)} %`,
          hl.bms_soc_error_pct != null ? t("health.card.soc_why", { points: num(hl.bms_soc_error_pct, 1) }) : why.soc_pct, "soc"),
        kv(t("health.card.weak_cells"), hl.weak_cells?.length ? hl.weak_cells.map((c) => t("alarms.cell", { n: c })).join(", ") : t("health.card.none_found"), null, "weak"),
      ),
      findings.length ? h("ul.findings", findings) : null,
      h("h3", t("health.card.active_alarms")),
      alarmList,
    );
  }
}
