// Pack page: live cells, temperatures, MOSFETs, faults; history charts; CSV export.

import { healthCard } from "./health.js";
import { AuthError, api, live } from "./api.js";
import { ChartSet } from "./charts.js";
import { num, t } from "./i18n.js";
import {
  ago,
  connectivityBadge,
  derive,
  faultLevel,
  faultText,
  fmt,
  fmtPower,
  fmtTime,
  h,
  refreshAges,
  sourceTag,
  stateLabel,
} from "./util.js";

const RANGES = [
  { key: "1h", n: 1, unit: "h", s: 3600 },
  { key: "24h", n: 24, unit: "h", s: 86400 },
  { key: "7d", n: 7, unit: "d", s: 7 * 86400 },
  { key: "30d", n: 30, unit: "d", s: 30 * 86400 },
  { key: "custom" },
];

const LINK_TO_CONN = { asleep: "asleep", disconnected: "link-down", degraded: "link-down" };

/** <input type=datetime-local> value for a time, in the browser's time zone. */
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

export async function renderPack(root, batteryId) {
  const item = await api.battery(batteryId);
  let range = sessionStorage.getItem("tbms.range") || "1h";
  if (range === "custom") range = "1h";
  let custom = null; // [fromMs, toMs]
  let lastHistoryAt = 0;
  let historyTimer = null;
  let bucketS = 60;

  const head = h("div.pack-head");
  const kpis = h("div.kpis");
  const cellsBox = h("div.cells#cells");
  const cellsMeta = h("p.muted.cells-meta");
  const temps = h("div.temps#temps");
  const mos = h("div.mos#mosfets");
  const faults = h("div.faults#faults");
  const chartsEl = h("div.charts#charts");
  const charts = new ChartSet(chartsEl);
  const histNote = h("p.muted.hist-note");
  const fromIn = h("input#range-from", { type: "datetime-local", "aria-label": t("pack.from") });
  const toIn = h("input#range-to", { type: "datetime-local", "aria-label": t("pack.to") });
  const customBox = h(
    "form.custom-range",
    {
      hidden: true,
      onsubmit: (ev) => {
        ev.preventDefault();
        const from = Date.parse(fromIn.value);
        const to = Date.parse(toIn.value);
        if (Number.isNaN(from) || Number.isNaN(to) || to <= from) {
          histNote.textContent = t("pack.range_invalid");
          return;
        }
        custom = [from, to];
        loadHistory();
      },
    },
    h("label", t("pack.from"), " ", fromIn),
    h("label", t("pack.to"), " ", toIn),
    h("button", { type: "submit" }, t("pack.show")),
  );
  const rangeButtons = h(
    "div.range-buttons",
    { role: "group", "aria-label": t("pack.range_aria") },
    RANGES.map((r) =>
      h(
        "button.range",
        {
          type: "button",
          dataset: { range: r.key },
          "aria-pressed": String(r.key === range),
          onclick: () => selectRange(r.key),
        },
        r.n ? t(`pack.range_${r.unit}`, { n: num(r.n, 0) }) : t("pack.range_custom"),
      ),
    ),
  );
  const exportBtn = h("button#export-csv", { type: "button", onclick: () => exportCsv() }, `⤓ ${t("pack.export_csv")}`);
  const exportNote = h("span.muted.export-note");

  root.replaceChildren(
    h(
      "section.pack",
      { dataset: { batteryId } },
      h("a.back", { href: "#/fleet" }, `← ${t("fleet.title")}`),
      head,
      kpis,
      h(
        "div.grid2",
        h("section.card.cells-card", h("h2", t("pack.cells")), cellsMeta, cellsBox,
          h("p.legend", h("span.lg.lg-min", t("pack.lowest")), h("span.lg.lg-max", t("pack.highest")),
            h("span.lg.lg-bal", t("pack.balancing")))),
        h(
          "div.stack",
          h("section.card", h("h2", t("pack.temperatures")), temps),
          h("section.card", h("h2", t("pack.switches")), mos),
          h("section.card", h("h2", t("pack.faults")), faults),
        ),
      ),
      healthCard(batteryId),
      h(
        "section.card.history",
        h("div.card-head", h("h2", t("pack.history")), h("div.export", exportBtn, exportNote)),
        rangeButtons,
        customBox,
        histNote,
        chartsEl,
      ),
    ),
  );

  function renderHead() {
    const devLink = item.device_id
      ? h("a", { href: `#/device/${encodeURIComponent(item.device_id)}` }, item.device_id)
      : h("span.muted", t("pack.no_device"));
    head.replaceChildren(
      h("div.title-row", h("h1#pack-name", item.name || item.battery_id), connectivityBadge(item.connectivity)),
      h(
        "p.muted.pack-sub",
        item.name && item.name !== item.battery_id ? `${item.battery_id} · ` : "",
        item.site_name || item.site_id || "",
        " · ",
        profileTag(item),
        ` · ${t("pack.device")} `,
        devLink,
        item.link_state ? ` (${t("pack.link", { state: t(`link.${item.link_state}`) })})` : "",
        ` · ${t("pack.last_seen")} `,
        h("span.ago#last-seen", { dataset: { ts: item.last_seen || "" }, title: fmtTime(item.last_seen) }, ago(item.last_seen)),
        " · ",
        sourceTag("server", item.latest?.ts),
      ),
    );
  }

  /** Chemistry and rated capacity as the admin set them (`admin battery-profile`); unset: LFP thresholds. */
  function profileTag(b) {
    const words = [];
    if (b.chemistry) words.push(b.chemistry.toUpperCase());
    if (b.rated_capacity_ah) words.push(t("pack.rated", { ah: num(b.rated_capacity_ah, 0) }));
    return h("span#pack-profile", { dataset: { chemistry: b.chemistry || "" } }, words.length ? words.join(" · ") : t("pack.profile_unset"));
  }

  function kpi(id, label, value, extra) {
    return h(`div.kpi#kpi-${id}`, h("span.kpi-label", label), h("span.kpi-value", value), extra || null);
  }

  function renderLive() {
    const s = item.latest || {};
    kpis.dataset.seq = s.seq ?? "";
    kpis.dataset.ts = s.ts ?? "";
    const soc = s.soc_pct;
    kpis.replaceChildren(
      kpi("soc", t("pack.kpi.soc"), fmt(soc, 1, "%"),
        h("span.soc-bar.big", h("span.soc-fill", { style: { width: `${Math.max(0, Math.min(100, soc ?? 0))}%` } }))),
      kpi("voltage", t("pack.kpi.voltage"), fmt(s.voltage_v, 1, "V")),
      kpi("current", t("pack.kpi.current"), fmt(s.current_a, 1, "A")),
      kpi("power", t("pack.kpi.power"), fmtPower(item.power_w)),
      kpi("state", t("pack.kpi.state"), stateLabel(s.state)),
      kpi("remaining", t("pack.kpi.remaining"), fmt(s.remaining_ah, 1, "Ah")),
      kpi("cycles", t("pack.kpi.cycles"), num(s.cycles, 0)),
      kpi("delta", t("pack.kpi.delta"), fmt(item.cell_delta_mv, 0, "mV")),
    );
    for (const [key, v] of [["voltage", s.voltage_v], ["current", s.current_a], ["soc", s.soc_pct]]) {
      kpis.querySelector(`#kpi-${key}`).dataset.value = v ?? "";
    }

    const cells = Array.isArray(s.cells_mv) ? s.cells_mv : [];
    const bal = new Set(s.balancing || []);
    if (!cells.length) {
      cellsMeta.textContent = t("pack.no_cells");
      cellsBox.replaceChildren();
    } else {
      const min = Math.min(...cells);
      const max = Math.max(...cells);
      // Scale around the spread so that a weak cell stands out; never flatter than 40 mV.
      const lo = min - Math.max(40, (max - min) * 0.6);
      const hi = max + 10;
      const minIdx = cells.indexOf(min);
      const maxIdx = cells.indexOf(max);
      const avg = cells.reduce((a, b) => a + b, 0) / cells.length;
      cellsMeta.textContent = t("pack.cells_meta", { n: num(cells.length, 0), min: num(min, 0), max: num(max, 0),
        delta: num(max - min, 0), avg: num(avg, 0) });
      cellsBox.replaceChildren(
        ...cells.map((mv, i) => {
          const flags = [i === minIdx && max > min ? ".is-min" : "", i === maxIdx && max > min ? ".is-max" : "",
            bal.has(i + 1) ? ".is-bal" : ""].join("");
          return h(
            `div.cell${flags}`,
            { dataset: { cell: i + 1, mv }, title: t(bal.has(i + 1) ? "pack.cell_title_bal" : "pack.cell_title", { n: i + 1, mv: num(mv, 0) }) },
            h("span.cell-no", String(i + 1)),
            h("span.cell-track", h("span.cell-fill", { style: { width: `${Math.max(2, ((mv - lo) / (hi - lo)) * 100)}%` } })),
            h("span.cell-mv", `${mv}`),
            h("span.cell-bal", { "aria-label": bal.has(i + 1) ? t("pack.balancing") : "" }, bal.has(i + 1) ? "⚖" : ""),
          );
        }),
      );
    }

    const tc = Array.isArray(s.temps_c) ? s.temps_c : [];
    temps.replaceChildren(
      ...(tc.length
        ? tc.map((c, i) => h(`div.temp${c >= 45 ? ".hot" : c <= 0 ? ".cold" : ""}`, { dataset: { sensor: i + 1 } },
            h("span.temp-label", `T${i + 1}`), h("span.temp-val", fmt(c, 0, "°C"))))
        : [h("p.muted", t("pack.no_temps"))]),
    );

    const sw = (label, on, id) =>
      h(`div.switch.${on === true ? "on" : on === false ? "off" : "unknown"}`, { dataset: { switch: id } },
        h("span.switch-dot"), h("span", label), h("strong", on === true ? t("pack.on") : on === false ? t("pack.off") : "–"));
    mos.replaceChildren(
      sw(t("pack.sw.charge_mos"), s.charge_mos, "charge_mos"),
      sw(t("pack.sw.discharge_mos"), s.discharge_mos, "discharge_mos"),
      sw(t("pack.sw.charger"), s.charger_connected, "charger_connected"),
      sw(t("pack.sw.load"), s.load_connected, "load_connected"),
    );

    const list = item.alarms || s.faults || [];
    faults.replaceChildren(
      list.length
        ? h("ul.fault-list", list.map((f) => h(`li.fault.fault-${faultLevel(f)}`, { dataset: { fault: f } }, faultText(f))))
        : h("p.ok-text", t("pack.no_faults")),
      ...(s.fault_code ? [h("p.muted", t("pack.fault_code", { code: s.fault_code }))] : []),
    );
  }

  function span() {
    if (range === "custom" && custom) return custom;
    const r = RANGES.find((x) => x.key === range) || RANGES[1];
    const now = Date.now();
    return [now - r.s * 1000, now];
  }

  async function loadHistory() {
    const [from, to] = span();
    lastHistoryAt = Date.now();
    try {
      const points = Math.min(1000, Math.max(120, Math.floor(chartsEl.clientWidth || 600)));
      const hist = await api.history(batteryId, new Date(from).toISOString(), new Date(to).toISOString(), points);
      bucketS = hist.bucket_s || 60;
      histNote.dataset.from = new Date(from).toISOString();
      histNote.dataset.to = new Date(to).toISOString();
      histNote.textContent = t("pack.hist_note", { from: fmtTime(new Date(from).toISOString()),
        to: fmtTime(new Date(to).toISOString()), n: num((hist.t || []).length, 0), bucket: num(bucketS, 0) });
      charts.update(hist, [from, to]);
    } catch (err) {
      if (err instanceof AuthError) window.dispatchEvent(new Event("tbms:auth"));
      else histNote.textContent = t("pack.history_failed", { error: err.message });
    }
  }

  function selectRange(key) {
    range = key;
    sessionStorage.setItem("tbms.range", key);
    for (const b of rangeButtons.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.range === key));
    customBox.hidden = key !== "custom";
    if (key === "custom") {
      if (!custom) {
        const now = Date.now();
        custom = [now - 86400000, now];
      }
      fromIn.value = localInput(custom[0]);
      toIn.value = localInput(custom[1]);
    }
    loadHistory();
  }

  // History follows live data for the rolling ranges, at most once per bucket (and every 15 s).
  function maybeRefreshHistory() {
    if (range === "custom" || historyTimer) return;
    const wait = Math.max(15000, bucketS * 1000) - (Date.now() - lastHistoryAt);
    historyTimer = setTimeout(() => {
      historyTimer = null;
      loadHistory();
    }, Math.max(0, wait));
  }

  async function exportCsv() {
    const [from, to] = span();
    exportBtn.disabled = true;
    exportNote.textContent = t("pack.export_preparing");
    try {
      const resp = await api.exportCsv(batteryId, new Date(from).toISOString(), new Date(to).toISOString());
      const blob = await resp.blob();
      const url = URL.createObjectURL(blob);
      const stamp = (ms) => new Date(ms).toISOString().slice(0, 16).replace(/[:T]/g, "");
      const a = h("a", { href: url, download: `${batteryId}_${stamp(from)}-${stamp(to)}.csv`, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      exportNote.textContent = "";
    } catch (err) {
      if (err instanceof AuthError) window.dispatchEvent(new Event("tbms:auth"));
      else exportNote.textContent = t("pack.export_failed", { error: err.message });
    } finally {
      exportBtn.disabled = false;
    }
  }

  renderHead();
  renderLive();
  selectRange(range);

  const off = live.on((msg) => {
    if (msg.type === "sample" && msg.battery_id === batteryId) {
      const sample = msg.sample || {};
      item.latest = { ...(item.latest || {}), ...sample };
      Object.assign(item, derive(item.latest));
      if (msg.connectivity) item.connectivity = msg.connectivity;
      if (sample.ts) item.last_seen = sample.ts;
      if (Array.isArray(sample.faults)) item.alarms = sample.faults;
      renderHead();
      renderLive();
      maybeRefreshHistory();
    } else if (msg.type === "heartbeat") {
      const b = (msg.heartbeat?.batteries || []).find((x) => x.battery_id === batteryId);
      if (b) {
        item.link_state = b.link_state;
        if (LINK_TO_CONN[b.link_state]) item.connectivity = LINK_TO_CONN[b.link_state];
        renderHead();
      }
    }
  });
  const tick = setInterval(() => {
    refreshAges(head);
  }, 1000);

  return () => {
    off();
    clearInterval(tick);
    clearTimeout(historyTimer);
    charts.dispose();
  };
}
