// Pack page: live cells, temperatures, MOSFETs, faults; history charts; CSV export.

import { healthCard } from "./health.js";
import { AuthError, api, live } from "./api.js";
import { ChartSet } from "./charts.js";
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
  stateLabel,
} from "./util.js";

const RANGES = [
  { key: "1h", label: "1 h", s: 3600 },
  { key: "24h", label: "24 h", s: 86400 },
  { key: "7d", label: "7 d", s: 7 * 86400 },
  { key: "30d", label: "30 d", s: 30 * 86400 },
  { key: "custom", label: "Custom" },
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
  const fromIn = h("input#range-from", { type: "datetime-local", "aria-label": "From" });
  const toIn = h("input#range-to", { type: "datetime-local", "aria-label": "To" });
  const customBox = h(
    "form.custom-range",
    {
      hidden: true,
      onsubmit: (ev) => {
        ev.preventDefault();
        const from = Date.parse(fromIn.value);
        const to = Date.parse(toIn.value);
        if (Number.isNaN(from) || Number.isNaN(to) || to <= from) {
          histNote.textContent = "Choose a start before the end.";
          return;
        }
        custom = [from, to];
        loadHistory();
      },
    },
    h("label", "From ", fromIn),
    h("label", "To ", toIn),
    h("button", { type: "submit" }, "Show"),
  );
  const rangeButtons = h(
    "div.range-buttons",
    { role: "group", "aria-label": "History range" },
    RANGES.map((r) =>
      h(
        "button.range",
        {
          type: "button",
          dataset: { range: r.key },
          "aria-pressed": String(r.key === range),
          onclick: () => selectRange(r.key),
        },
        r.label,
      ),
    ),
  );
  const exportBtn = h("button#export-csv", { type: "button", onclick: () => exportCsv() }, "⤓ Export CSV");
  const exportNote = h("span.muted.export-note");

  root.replaceChildren(
    h(
      "section.pack",
      { dataset: { batteryId } },
      h("a.back", { href: "#/fleet" }, "← Fleet"),
      head,
      kpis,
      h(
        "div.grid2",
        h("section.card.cells-card", h("h2", "Cells"), cellsMeta, cellsBox,
          h("p.legend", h("span.lg.lg-min", "lowest"), h("span.lg.lg-max", "highest"), h("span.lg.lg-bal", "balancing"))),
        h(
          "div.stack",
          h("section.card", h("h2", "Temperatures"), temps),
          h("section.card", h("h2", "Switches"), mos),
          h("section.card", h("h2", "Faults"), faults),
        ),
      ),
      healthCard(batteryId),
      h(
        "section.card.history",
        h("div.card-head", h("h2", "History"), h("div.export", exportBtn, exportNote)),
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
      : h("span.muted", "no device");
    head.replaceChildren(
      h("div.title-row", h("h1#pack-name", item.name || item.battery_id), connectivityBadge(item.connectivity)),
      h(
        "p.muted.pack-sub",
        item.name && item.name !== item.battery_id ? `${item.battery_id} · ` : "",
        item.site_name || item.site_id || "",
        " · device ",
        devLink,
        item.link_state ? ` (link ${item.link_state})` : "",
        " · last seen ",
        h("span.ago#last-seen", { dataset: { ts: item.last_seen || "" }, title: fmtTime(item.last_seen) }, ago(item.last_seen)),
      ),
    );
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
      kpi("soc", "State of charge", fmt(soc, 1, "%"),
        h("span.soc-bar.big", h("span.soc-fill", { style: { width: `${Math.max(0, Math.min(100, soc ?? 0))}%` } }))),
      kpi("voltage", "Voltage", fmt(s.voltage_v, 1, "V")),
      kpi("current", "Current", fmt(s.current_a, 1, "A")),
      kpi("power", "Power", fmtPower(item.power_w)),
      kpi("state", "State", stateLabel(s.state)),
      kpi("remaining", "Remaining", fmt(s.remaining_ah, 1, "Ah")),
      kpi("cycles", "Cycles", s.cycles ?? "–"),
      kpi("delta", "Cell delta", item.cell_delta_mv == null ? "–" : `${item.cell_delta_mv} mV`),
    );
    for (const [key, v] of [["voltage", s.voltage_v], ["current", s.current_a], ["soc", s.soc_pct]]) {
      kpis.querySelector(`#kpi-${key}`).dataset.value = v ?? "";
    }

    const cells = Array.isArray(s.cells_mv) ? s.cells_mv : [];
    const bal = new Set(s.balancing || []);
    if (!cells.length) {
      cellsMeta.textContent = "No cell voltages in the latest reading.";
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
      cellsMeta.textContent = `${cells.length} cells · min ${min} mV · max ${max} mV · Δ ${max - min} mV · avg ${Math.round(avg)} mV`;
      cellsBox.replaceChildren(
        ...cells.map((mv, i) => {
          const flags = [i === minIdx && max > min ? ".is-min" : "", i === maxIdx && max > min ? ".is-max" : "",
            bal.has(i + 1) ? ".is-bal" : ""].join("");
          return h(
            `div.cell${flags}`,
            { dataset: { cell: i + 1, mv }, title: `Cell ${i + 1}: ${mv} mV${bal.has(i + 1) ? ", balancing" : ""}` },
            h("span.cell-no", String(i + 1)),
            h("span.cell-track", h("span.cell-fill", { style: { width: `${Math.max(2, ((mv - lo) / (hi - lo)) * 100)}%` } })),
            h("span.cell-mv", `${mv}`),
            h("span.cell-bal", { "aria-label": bal.has(i + 1) ? "balancing" : "" }, bal.has(i + 1) ? "⚖" : ""),
          );
        }),
      );
    }

    const t = Array.isArray(s.temps_c) ? s.temps_c : [];
    temps.replaceChildren(
      ...(t.length
        ? t.map((c, i) => h(`div.temp${c >= 45 ? ".hot" : c <= 0 ? ".cold" : ""}`, { dataset: { sensor: i + 1 } },
            h("span.temp-label", `T${i + 1}`), h("span.temp-val", fmt(c, 0, "°C"))))
        : [h("p.muted", "No temperatures in the latest reading.")]),
    );

    const sw = (label, on, id) =>
      h(`div.switch.${on === true ? "on" : on === false ? "off" : "unknown"}`, { dataset: { switch: id } },
        h("span.switch-dot"), h("span", label), h("strong", on === true ? "on" : on === false ? "off" : "–"));
    mos.replaceChildren(
      sw("Charge MOSFET", s.charge_mos, "charge_mos"),
      sw("Discharge MOSFET", s.discharge_mos, "discharge_mos"),
      sw("Charger", s.charger_connected, "charger_connected"),
      sw("Load", s.load_connected, "load_connected"),
    );

    const list = item.alarms || s.faults || [];
    faults.replaceChildren(
      list.length
        ? h("ul.fault-list", list.map((f) => h(`li.fault.fault-${faultLevel(f)}`, { dataset: { fault: f } }, faultText(f))))
        : h("p.ok-text", "No active faults."),
      ...(s.fault_code ? [h("p.muted", `Fault code ${s.fault_code}`)] : []),
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
      histNote.textContent = `${fmtTime(new Date(from).toISOString())} – ${fmtTime(new Date(to).toISOString())} · ${(hist.t || []).length} points, ${bucketS} s each`;
      charts.update(hist, [from, to]);
    } catch (err) {
      if (err instanceof AuthError) window.dispatchEvent(new Event("tbms:auth"));
      else histNote.textContent = `Could not load history: ${err.message}`;
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
    exportNote.textContent = "preparing…";
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
      else exportNote.textContent = `Export failed: ${err.message}`;
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
    const el = head.querySelector("#last-seen");
    if (el) el.textContent = ago(el.dataset.ts);
  }, 1000);

  return () => {
    off();
    clearInterval(tick);
    clearTimeout(historyTimer);
    charts.dispose();
  };
}
