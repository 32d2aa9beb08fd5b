// The views of direct mode (a gateway served the app and the server does not answer) and of the offline
// state: the gateway's packs with live values, a pack page with cells and the history kept on this phone,
// and the gateway itself (link states, queue backlog, uplinks in priority order, which path the data took).
// Every value carries its source (direct LAN / direct Bluetooth) and its age.

import { getToken } from "./api.js";
import { direct, LanTokenError, setLanToken } from "./direct.js";
import { ChartSet } from "./charts.js";
import { num, t, tn } from "./i18n.js";
import { countPoints, keepPerPack, points, setKeepPerPack, toHistory } from "./localdb.js";
import { lastRelay, outboxStatus } from "./relay.js";
import { mode } from "./mode.js";
import {
  derive, faultLevel, faultText, fmt, fmtDuration, fmtPower, fmtTime, h, refreshAges, sourceTag, stateLabel,
} from "./util.js";

const LINK_CLS = { ok: "ok", degraded: "warn", asleep: "sleep", disconnected: "bad" };

function linkBadge(state) {
  // offline, the last link state heard may be long gone: say nothing rather than a stale "ok"
  if (mode.mode === "offline") state = null;
  return h(`span.badge.conn-${LINK_CLS[state] || "muted"}`, { dataset: { link: state || "" } },
    state ? t(`link.${state}`) : t("common.unknown"));
}

/** The banner above direct views: what mode this is and why (the mode indicator says it in a word). */
function modeNote() {
  if (mode.mode === "server") return null; // the gateway's view, opened in server mode: nothing to explain
  if (mode.mode === "offline") return h("p.mode-note.mode-offline", t("direct.offline_note"));
  if (mode.serverReachable) {
    // direct mode while the server answers: the user chose this gateway (signed in there or not)
    return h("p.mode-note", t("direct.server_answers"), " ",
      h("button.link-button#use-server", { type: "button", onclick: () => mode.pinDirect(false) },
        t(getToken() ? "direct.back_to_server" : "direct.use_server")));
  }
  return h("p.mode-note", t("direct.note"));
}

/** Shown when the gateway asks for its LAN token (local_api.token). */
export function renderLanToken(root) {
  const input = h("input#lan-token", { type: "password", autocomplete: "off", required: true });
  root.replaceChildren(h("div.login-wrap", h("form.login-card", {
    onsubmit: (ev) => {
      ev.preventDefault();
      setLanToken(input.value.trim());
      location.reload();
    },
  }, h("h1", t("direct.token_title")), h("p.muted", t("direct.token_intro")), h("label", { for: "lan-token" }, t("direct.token")),
  input, h("button.primary#lan-token-submit", { type: "submit" }, t("direct.token_submit")))));
}

export async function renderDirectFleet(root) {
  const body = h("div.fleet-body");
  const summary = h("p.muted.fleet-summary");
  root.replaceChildren(h("section.fleet.direct", modeNote(),
    h("div.page-head", h("h1", t("direct.fleet_title"))), summary, body));
  if (!direct.packs.size) await direct.loadKept();

  function row(p) {
    const s = p.latest || {};
    const d = derive(s);
    const href = `#/pack/${encodeURIComponent(p.battery_id)}`;
    return h("tr.pack-row", { dataset: { batteryId: p.battery_id }, onclick: (ev) => {
      if (!ev.target.closest("a")) location.hash = href;
    } },
    h("td.c-name", { dataset: { label: t("fleet.col.name") } }, h("a.pack-link", { href }, p.battery_id)),
    h("td.c-conn", { dataset: { label: t("direct.col.link") } }, linkBadge(p.link_state)),
    h("td.c-soc.num", { dataset: { label: t("fleet.col.soc") } }, h("span.soc", h("span.soc-bar",
      h("span.soc-fill", { style: { width: `${Math.max(0, Math.min(100, s.soc_pct ?? 0))}%` } })),
    h("span.soc-val", fmt(s.soc_pct, 0, "%")))),
    h("td.c-voltage.num", { dataset: { label: t("pack.kpi.voltage"), value: s.voltage_v ?? "" } }, fmt(s.voltage_v, 2, "V")),
    h("td.c-current.num", { dataset: { label: t("pack.kpi.current") } }, fmt(s.current_a, 1, "A")),
    h("td.c-power.num", { dataset: { label: t("fleet.col.power") } }, fmtPower(d.power_w)),
    h("td.c-state", { dataset: { label: t("fleet.col.state") } }, h(`span.state.state-${s.state || "none"}`, stateLabel(s.state))),
    h("td.c-cells.num", { dataset: { label: t("fleet.col.cells") } },
      d.cell_min_mv == null ? "–" : `${num(d.cell_min_mv, 0)} / ${num(d.cell_max_mv, 0)} mV (Δ ${num(d.cell_delta_mv, 0)})`),
    h("td.c-faults", { dataset: { label: t("fleet.col.faults") } }, (s.faults || []).length
      ? h("ul.fault-list", s.faults.map((f) => h(`li.fault.fault-${faultLevel(f)}`, { dataset: { fault: f } }, faultText(f))))
      : h("span.muted", t("fleet.no_faults"))),
    h("td.c-seen", { dataset: { label: t("direct.col.source") } }, sourceTag(p.source || "lan", s.ts)));
  }

  function render() {
    const list = [...direct.packs.values()].sort((a, b) => (a.battery_id < b.battery_id ? -1 : 1));
    summary.textContent = tn("fleet.packs", list.length);
    if (!list.length) {
      body.replaceChildren(h("div.empty", h("p", t("direct.no_packs"))));
      return;
    }
    body.replaceChildren(h("div.table-wrap", h("table.fleet-table", h("thead", h("tr",
      [t("fleet.col.name"), t("direct.col.link"), t("fleet.col.soc"), t("pack.kpi.voltage"), t("pack.kpi.current"),
        t("fleet.col.power"), t("fleet.col.state"), t("fleet.col.cells"), t("fleet.col.faults"), t("direct.col.source")]
        .map((c) => h("th", { scope: "col" }, c)))), h("tbody", list.map(row)))));
  }

  render();
  let dirty = false;
  const off = direct.on((msg) => {
    if (msg.type !== "history") dirty = true;
  });
  const tick = setInterval(() => {
    if (dirty) {
      dirty = false;
      render();
    } else refreshAges(body);
  }, 1000);
  return () => {
    off();
    clearInterval(tick);
  };
}

export async function renderDirectPack(root, batteryId) {
  if (!direct.packs.size) await direct.loadKept();
  const head = h("div.pack-head");
  const kpis = h("div.kpis");
  const cellsBox = h("div.cells#cells");
  const cellsMeta = h("p.muted.cells-meta");
  const temps = h("div.temps#temps");
  const mos = h("div.mos#mosfets");
  const faults = h("div.faults#faults");
  const chartsEl = h("div.charts#charts");
  const charts = new ChartSet(chartsEl);
  const histNote = h("p.muted.hist-note#hist-note");

  root.replaceChildren(h("section.pack.direct", { dataset: { batteryId } },
    modeNote(),
    h("a.back", { href: "#/fleet" }, `← ${t("direct.fleet_title")}`),
    head, kpis,
    h("div.grid2",
      h("section.card.cells-card", h("h2", t("pack.cells")), cellsMeta, cellsBox),
      h("div.stack",
        h("section.card", h("h2", t("pack.temperatures")), temps),
        h("section.card", h("h2", t("pack.switches")), mos),
        h("section.card", h("h2", t("pack.faults")), faults))),
    h("section.card.history", h("div.card-head", h("h2", t("direct.history"))), histNote, chartsEl)));

  function kpi(id, label, value) {
    return h(`div.kpi#kpi-${id}`, h("span.kpi-label", label), h("span.kpi-value", value));
  }

  function render() {
    const p = direct.packs.get(batteryId) || { battery_id: batteryId };
    const s = p.latest || {};
    const d = derive(s);
    head.replaceChildren(
      h("div.title-row", h("h1#pack-name", batteryId), linkBadge(p.link_state)),
      h("p.muted.pack-sub", t("direct.values_from"), " ", sourceTag(p.source || "lan", s.ts),
        p.last_error && p.link_state !== "ok" ? h("span.err", ` · ${p.last_error}`) : null),
    );
    kpis.dataset.seq = s.seq ?? "";
    kpis.dataset.ts = s.ts ?? "";
    kpis.replaceChildren(
      kpi("soc", t("pack.kpi.soc"), fmt(s.soc_pct, 1, "%")),
      kpi("voltage", t("pack.kpi.voltage"), fmt(s.voltage_v, 2, "V")),
      kpi("current", t("pack.kpi.current"), fmt(s.current_a, 1, "A")),
      kpi("power", t("pack.kpi.power"), fmtPower(d.power_w)),
      kpi("state", t("pack.kpi.state"), stateLabel(s.state)),
      kpi("remaining", t("pack.kpi.remaining"), fmt(s.remaining_ah, 1, "Ah")),
      kpi("cycles", t("pack.kpi.cycles"), num(s.cycles, 0)),
      kpi("delta", t("pack.kpi.delta"), fmt(d.cell_delta_mv, 0, "mV")),
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
      const lo = min - Math.max(40, (max - min) * 0.6);
      const hi = max + 10;
      const avg = cells.reduce((a, b) => a + b, 0) / cells.length;
      cellsMeta.textContent = t("pack.cells_meta", { n: num(cells.length, 0), min: num(min, 0), max: num(max, 0),
        delta: num(max - min, 0), avg: num(avg, 0) });
      cellsBox.replaceChildren(...cells.map((mv, i) => h(
        `div.cell${mv === min && max > min ? ".is-min" : ""}${mv === max && max > min ? ".is-max" : ""}${bal.has(i + 1) ? ".is-bal" : ""}`,
        { dataset: { cell: i + 1, mv } },
        h("span.cell-no", String(i + 1)),
        h("span.cell-track", h("span.cell-fill", { style: { width: `${Math.max(2, ((mv - lo) / (hi - lo)) * 100)}%` } })),
        h("span.cell-mv", `${mv}`),
        h("span.cell-bal", bal.has(i + 1) ? "⚖" : ""),
      )));
    }
    const tc = Array.isArray(s.temps_c) ? s.temps_c : [];
    temps.replaceChildren(...(tc.length
      ? tc.map((c, i) => h("div.temp", { dataset: { sensor: i + 1 } }, h("span.temp-label", `T${i + 1}`), h("span.temp-val", fmt(c, 0, "°C"))))
      : [h("p.muted", t("pack.no_temps"))]));
    const sw = (label, on, id) => h(`div.switch.${on === true ? "on" : on === false ? "off" : "unknown"}`, { dataset: { switch: id } },
      h("span.switch-dot"), h("span", label), h("strong", on === true ? t("pack.on") : on === false ? t("pack.off") : "–"));
    mos.replaceChildren(sw(t("pack.sw.charge_mos"), s.charge_mos, "charge_mos"),
      sw(t("pack.sw.discharge_mos"), s.discharge_mos, "discharge_mos"),
      sw(t("pack.sw.charger"), s.charger_connected, "charger_connected"),
      sw(t("pack.sw.load"), s.load_connected, "load_connected"));
    const list = s.faults || [];
    faults.replaceChildren(list.length
      ? h("ul.fault-list", list.map((f) => h(`li.fault.fault-${faultLevel(f)}`, { dataset: { fault: f } }, faultText(f))))
      : h("p.ok-text", t("pack.no_faults")));
  }

  let drawing = false;
  let lastDraw = 0;
  async function drawHistory() {
    if (drawing) return;
    drawing = true;
    lastDraw = Date.now();
    try {
      const list = await points(batteryId);
      const pack = direct.packs.get(batteryId);
      const hist = toHistory(list, pack?.poll_interval_s || 1);
      histNote.dataset.points = String(list.length);
      histNote.textContent = list.length
        ? t("direct.hist_note", { n: num(list.length, 0), keep: num(keepPerPack(), 0),
          from: fmtTime(new Date(list[0].t).toISOString()), to: fmtTime(new Date(list.at(-1).t).toISOString()) })
        : t("direct.hist_empty");
      charts.update(hist, list.length ? [list[0].t, list.at(-1).t] : null);
    } catch (err) {
      histNote.textContent = t("pack.history_failed", { error: err.message });
    } finally {
      drawing = false;
    }
  }

  render();
  await drawHistory();
  let dirty = false;
  const off = direct.on((msg) => {
    if (msg.type === "history") {
      if (Date.now() - lastDraw > 5000 || !msg.battery_id) drawHistory();
    } else if (!msg.battery_id || msg.battery_id === batteryId) dirty = true;
  });
  const tick = setInterval(() => {
    if (dirty) {
      dirty = false;
      render();
    } else refreshAges(head);
  }, 1000);
  return () => {
    off();
    clearInterval(tick);
    charts.dispose();
  };
}

/** The gateway itself: uplinks in priority order (then the phone), which path the data took, the queue
 * backlog, each pack's link; how many points this phone keeps; the Bluetooth connection. */
export async function renderGateway(root) {
  const status = h("div.card#gateway-status");
  const links = h("div.card#gateway-links");
  const phone = h("div.card#phone-settings");
  root.replaceChildren(h("section.gateway", modeNote(), h("div.page-head", h("h1", t("gateway.title"))), status, links, phone));

  const keepIn = h("input#keep-per-pack", { type: "number", min: 10, max: 100000, step: 100, value: String(keepPerPack()) });
  const bleNote = h("p.muted#ble-note");
  const counts = h("p.muted#kept-counts");
  const relayLine = h("p.muted#relay-status");
  phone.replaceChildren(
    h("h2", t("gateway.phone")),
    h("form.keep-form", { onsubmit: (ev) => {
      ev.preventDefault();
      setKeepPerPack(Number(keepIn.value));
      keepIn.value = String(keepPerPack());
      renderCounts();
    } }, h("label", { for: "keep-per-pack" }, t("gateway.keep")), " ", keepIn, " ", h("button", { type: "submit" }, t("gateway.save"))),
    counts,
    relayLine,
    h("h2", t("ble.title")),
    h("button#ble-connect", { type: "button", onclick: () => connectBluetooth(bleNote) }, t("ble.connect")),
    bleNote,
  );

  async function renderRelay() {
    const last = lastRelay();
    const now = await outboxStatus().catch(() => null);
    const when = last ? fmtTime(last.at) : "";
    relayLine.replaceChildren(
      now ? h("span", t("relay.status", { samples: num(now.samples, 0), receipts: num(now.receipts, 0) })) : "",
      last ? h("br") : "",
      last ? h("span#relay-last", last.errors.length ? t("relay.error", { when, error: last.errors[0] })
        : t("relay.last", { when, uploaded: num(last.uploaded, 0), accepted: num(last.accepted, 0),
          duplicates: num(last.duplicates, 0), acked: num(last.acked, 0) })) : "",
    );
  }

  async function renderCounts() {
    const parts = [];
    for (const id of direct.packs.keys()) parts.push(`${id}: ${num(await countPoints(id), 0)}`);
    counts.textContent = t("gateway.kept", { list: parts.join(" · ") || "–" });
  }

  function render() {
    const g = direct.gateway;
    if (!g) {
      status.replaceChildren(h("h2", t("gateway.status")), h("p.muted", mode.mode === "offline" ? t("direct.offline_note") : t("common.loading")));
    } else {
      const ups = Array.isArray(g.uplinks) ? g.uplinks : [];
      status.replaceChildren(
        h("h2", t("gateway.status")),
        h("dl.kv",
          h("dt", t("gateway.via")), h("dd#gateway-via", { dataset: { via: g.via || "" } },
            g.via ? t("gateway.via_value", { via: t(`via.${g.via}`) }) : t("gateway.via_none"),
            g.delivered_ts ? [" · ", h("span.ago", { dataset: { ts: g.delivered_ts } }, "")] : null),
          h("dt", t("gateway.queue")), h("dd#gateway-queue", { dataset: { depth: g.queue_depth ?? "" } },
            tn("gateway.queued", g.queue_depth ?? 0),
            g.oldest_queued_ts ? ` · ${t("gateway.oldest", { when: fmtTime(g.oldest_queued_ts) })}` : ""),
          h("dt", t("gateway.disk")), h("dd", `${num(g.disk_used_pct, 1)} %`),
          h("dt", t("gateway.uptime")), h("dd", fmtDuration(g.uptime_s)),
          h("dt", t("gateway.version")), h("dd", g.version || "–"),
          h("dt", t("gateway.servers")), h("dd#gateway-servers", (g.server_urls || []).join(", ") || t("gateway.no_server")),
          // the Bluetooth service (when [ble] is on): the name to pick and the code its configure command needs
          g.ble ? [h("dt", t("gateway.ble_name")), h("dd#gateway-ble-name", [g.ble.name, g.ble.address].filter(Boolean).join(" · ")),
            h("dt", t("gateway.pairing_code")), h("dd#gateway-pairing", g.ble.pairing_code ?? "–")] : null),
        h("h3", t("gateway.paths")),
        h("ol.uplinks#uplinks", ups.map((u) => h(`li.uplink.uplink-${u.state}`, { dataset: { name: u.name, state: u.state } },
          h("strong", t(`via.${u.name}`)), " — ", t(`gateway.uplink_state.${u.state}`),
          u.last_error ? h("span.err", ` (${u.last_error})`) : null))),
      );
      refreshAges(status);
    }
    const packs = [...direct.packs.values()];
    links.replaceChildren(h("h2", t("gateway.links")), h("table.alarm-table", h("thead", h("tr",
      [t("fleet.col.name"), t("direct.col.link"), t("gateway.since"), t("gateway.frames"), t("gateway.last_error")]
        .map((c) => h("th", c)))),
    h("tbody", packs.map((p) => h("tr", { dataset: { batteryId: p.battery_id } },
      h("td", p.battery_id), h("td", linkBadge(p.link_state)), h("td", fmtTime(p.since)),
      h("td.num", `${num(p.frames_good ?? 0, 0)} / ${num(p.frames_bad ?? 0, 0)}`),
      h("td", p.last_error || "–"))))));
  }

  if (!direct.packs.size) await direct.loadKept();
  render();
  renderCounts();
  renderRelay();
  window.addEventListener("tbms:relay", renderRelay);
  let dirty = false;
  const off = direct.on(() => {
    dirty = true;
  });
  const tick = setInterval(() => {
    if (dirty) {
      dirty = false;
      render();
    } else refreshAges(status);
  }, 1000);
  // the queue depth and uplink health change without an event: ask the gateway now and then
  const poll = setInterval(() => {
    if (mode.mode !== "offline") direct.refreshState().then(render).catch(() => {});
  }, 5000);
  return () => {
    off();
    clearInterval(tick);
    clearInterval(poll);
    window.removeEventListener("tbms:relay", renderRelay);
  };
}

/** Bluetooth direct mode: ble.js (Web Bluetooth) where the browser has it; a clear word where it does not. */
export async function connectBluetooth(note) {
  if (!navigator.bluetooth) {
    note.textContent = t("ble.unsupported");
    note.dataset.state = "unsupported";
    return;
  }
  let ble;
  try {
    ble = await import("./ble.js");
  } catch (err) {
    note.textContent = t("ble.missing");
    note.dataset.state = "missing";
    return;
  }
  try {
    note.textContent = t("ble.connecting");
    // contract with ble.js: connect({onSample}) → resolves once connected; each reading carries source "ble"
    await ble.connect({
      onSample: (sample) => direct.take(sample.battery_id, sample, "ble"),
    });
    note.textContent = t("ble.connected");
    note.dataset.state = "connected";
  } catch (err) {
    note.textContent = t("ble.failed", { error: err.message || String(err) });
    note.dataset.state = "failed";
  }
}

export { LanTokenError };
