// Fleet overview: every pack grouped by site, packs with alarms first, sortable, live.

import { AuthError, api, live } from "./api.js";
import { num, t, tn } from "./i18n.js";
import {
  ago, connectivityBadge, derive, faultLevel, faultText, fmt, fmtPower, h, parseTs, sourceTag, stateLabel,
} from "./util.js";

const COLUMNS = [
  { key: "name", label: "fleet.col.name", value: (it) => (it.name || it.battery_id).toLowerCase() },
  { key: "connectivity", label: "fleet.col.connectivity", value: (it) => connRank(it.connectivity) },
  { key: "soc", label: "fleet.col.soc", value: (it) => it.latest?.soc_pct ?? -1 },
  { key: "power", label: "fleet.col.power", value: (it) => it.power_w ?? 0 },
  { key: "state", label: "fleet.col.state", value: (it) => it.latest?.state || "" },
  { key: "cells", label: "fleet.col.cells", value: (it) => it.cell_min_mv ?? 0 },
  { key: "delta", label: "fleet.col.delta", value: (it) => it.cell_delta_mv ?? -1 },
  { key: "temp", label: "fleet.col.temp", value: (it) => maxTemp(it) ?? -999 },
  { key: "faults", label: "fleet.col.faults", value: (it) => it.alarms?.length || 0 },
  { key: "health", label: "fleet.col.health", value: (it) => it.health?.soh_pct ?? 999 },
  { key: "active_alarms", label: "fleet.col.active_alarms", value: (it) => it.active_alarms || 0 },
  { key: "last_seen", label: "fleet.col.last_seen", value: (it) => parseTs(it.last_seen) ?? 0 },
];

function connRank(c) {
  return { offline: 0, "link-down": 1, asleep: 2, backfilling: 3, online: 4 }[c] ?? 0;
}

function maxTemp(it) {
  const tc = it.latest?.temps_c;
  return Array.isArray(tc) && tc.length ? Math.max(...tc) : null;
}

function healthText(it) {
  const hl = it.health;
  if (!hl) return h("span.muted", "–");
  const parts = [hl.soh_pct != null ? `${t("health.soh")} ${fmt(hl.soh_pct, 0)} %` : null];
  if (hl.weak_cells?.length) parts.push(tn("health.weak_cells", hl.weak_cells.length, { cells: hl.weak_cells.join(", ") }));
  else if (hl.findings) parts.push(tn("health.findings", hl.findings));
  const text = parts.filter(Boolean).join(" · ");
  return text ? h(`span${hl.weak_cells?.length ? ".health-weak" : ""}`, text) : h("span.muted", t("link.ok"));
}

function tempText(it) {
  const tc = it.latest?.temps_c;
  if (!Array.isArray(tc) || !tc.length) return "–";
  const lo = Math.min(...tc);
  const hi = Math.max(...tc);
  return lo === hi ? `${fmt(hi, 0)} °C` : `${fmt(lo, 0)}–${fmt(hi, 0)} °C`;
}

const LINK_TO_CONN = { asleep: "asleep", disconnected: "link-down", degraded: "link-down" };

/** A pack "with alarms": its BMS reports a fault, or the server holds an active alarm on it (a rule, a
 * finding, no data) — the summary, the alarms-first order and the site order all count both. */
function alarmed(it) {
  return Boolean(it.alarms?.length) || (it.active_alarms || 0) > 0;
}

export async function renderFleet(root) {
  const sort = JSON.parse(sessionStorage.getItem("tbms.fleetSort") || '{"key":"name","dir":1}');
  const items = new Map();
  let dirty = false;
  const body = h("div.fleet-body");
  const summary = h("p.muted.fleet-summary");
  const sortSelect = h(
    "select#sort-select",
    {
      "aria-label": t("fleet.sort_aria"),
      onchange: () => {
        sort.key = sortSelect.value;
        sort.dir = sort.key === "name" ? 1 : -1;
        saveSort();
        render();
      },
    },
    COLUMNS.map((c) => h("option", { value: c.key, selected: c.key === sort.key }, t(c.label))),
  );

  root.replaceChildren(
    h(
      "section.fleet",
      h("div.page-head", h("h1", t("fleet.title")), h("label.sort", t("fleet.sort_by"), " ", sortSelect)),
      summary,
      body,
    ),
  );

  function saveSort() {
    sessionStorage.setItem("tbms.fleetSort", JSON.stringify(sort));
  }

  function setItems(list) {
    const old = new Map(items);
    items.clear();
    for (const it of list) {
      // A gateway polls cells and temperatures less often than the pack values, so the latest sample
      // may be partial: keep what we already know until it is measured again.
      const prev = old.get(it.battery_id);
      if (prev?.latest && it.latest) {
        // the server's alarms are the latest sample's faults: a sample that did not read them says nothing
        if (!Array.isArray(it.latest.faults)) it.alarms = prev.alarms;
        it.latest = { ...prev.latest, ...it.latest };
        for (const [k, v] of Object.entries(derive(it.latest))) if (it[k] == null) it[k] = v;
      }
      items.set(it.battery_id, it);
    }
  }

  function sorted(list) {
    const col = COLUMNS.find((c) => c.key === sort.key) || COLUMNS[0];
    return [...list].sort((a, b) => {
      // Alarms first whatever the sort: an operator must see them without scrolling.
      const ra = alarmed(a) ? 0 : 1;
      const rb = alarmed(b) ? 0 : 1;
      if (ra !== rb) return ra - rb;
      const va = col.value(a);
      const vb = col.value(b);
      if (va < vb) return -sort.dir;
      if (va > vb) return sort.dir;
      return a.battery_id < b.battery_id ? -1 : 1;
    });
  }

  function row(it) {
    const s = it.latest || {};
    const href = `#/pack/${encodeURIComponent(it.battery_id)}`;
    const alarms = it.alarms || [];
    const soc = s.soc_pct;
    return h(
      "tr.pack-row",
      { dataset: { batteryId: it.battery_id, alarm: alarmed(it) ? "1" : "0" }, onclick: (ev) => {
        if (ev.target.closest("a")) return;
        location.hash = href;
      } },
      h("td.c-name", { dataset: { label: t("fleet.col.name") } }, h("a.pack-link", { href }, it.name || it.battery_id),
        it.name && it.name !== it.battery_id ? h("span.sub", it.battery_id) : null),
      h("td.c-conn", { dataset: { label: t("fleet.col.connectivity") } }, connectivityBadge(it.connectivity)),
      h("td.c-soc.num", { dataset: { label: t("fleet.col.soc") } },
        h("span.soc", h("span.soc-bar", h("span.soc-fill", { style: { width: `${Math.max(0, Math.min(100, soc ?? 0))}%` } })),
          h("span.soc-val", fmt(soc, 0, "%")))),
      h("td.c-power.num", { dataset: { label: t("fleet.col.power") } }, fmtPower(it.power_w)),
      h("td.c-state", { dataset: { label: t("fleet.col.state") } }, h(`span.state.state-${s.state || "none"}`, stateLabel(s.state))),
      h("td.c-cells.num", { dataset: { label: t("fleet.col.cells") } },
        it.cell_min_mv == null ? "–" : `${num(it.cell_min_mv, 0)} / ${num(it.cell_max_mv, 0)} mV`),
      h("td.c-delta.num", { dataset: { label: t("fleet.col.delta") } },
        h(`span${(it.cell_delta_mv ?? 0) >= 100 ? ".delta-high" : ""}`, it.cell_delta_mv == null ? "–" : `${num(it.cell_delta_mv, 0)} mV`)),
      h("td.c-temp.num", { dataset: { label: t("fleet.col.temp") } }, tempText(it)),
      h("td.c-faults", { dataset: { label: t("fleet.col.faults") } },
        alarms.length
          ? h("ul.fault-list", alarms.map((f) => h(`li.fault.fault-${faultLevel(f)}`, { dataset: { fault: f } }, faultText(f))))
          : h("span.muted", t("fleet.no_faults"))),
      h("td.c-health", { dataset: { label: t("fleet.col.health") } }, healthText(it)),
      h("td.c-alarms.num", { dataset: { label: t("fleet.col.active_alarms") } },
        it.active_alarms
          ? h(`a.alarm-count.sev-${it.worst_severity}`,
            { href: "#/alarms", title: t("fleet.worst", { severity: t(`severity.${it.worst_severity}`) }) },
            num(it.active_alarms, 0))
          : h("span.muted", num(0, 0))),
      h("td.c-seen", { dataset: { label: t("fleet.col.last_seen") } }, sourceTag("server", it.last_seen)),
    );
  }

  function table(list) {
    return h(
      "table.fleet-table",
      h("thead", h("tr", COLUMNS.map((c) => h(
        `th${c.key === sort.key ? ".sorted" : ""}`,
        { scope: "col", "aria-sort": c.key === sort.key ? (sort.dir > 0 ? "ascending" : "descending") : "none" },
        h("button.th-sort", { type: "button", onclick: () => {
          if (sort.key === c.key) sort.dir = -sort.dir;
          else Object.assign(sort, { key: c.key, dir: c.key === "name" ? 1 : -1 });
          sortSelect.value = sort.key;
          saveSort();
          render();
        } }, t(c.label), c.key === sort.key ? (sort.dir > 0 ? " ▲" : " ▼") : ""),
      )))),
      h("tbody", sorted(list).map(row)),
    );
  }

  function render() {
    dirty = false;
    const all = [...items.values()];
    const sites = new Map();
    for (const it of all) {
      const key = it.site_id || "";
      if (!sites.has(key)) sites.set(key, { name: it.site_name || it.site_id || t("fleet.no_site"), items: [] });
      sites.get(key).items.push(it);
    }
    // Sites holding alarms come first too, then by name.
    const groups = [...sites.entries()].sort(([, a], [, b]) => {
      const aa = a.items.some(alarmed) ? 0 : 1;
      const bb = b.items.some(alarmed) ? 0 : 1;
      return aa - bb || a.name.localeCompare(b.name);
    });
    const online = all.filter((i) => i.connectivity === "online").length;
    summary.textContent = [tn("fleet.packs", all.length), tn("fleet.sites", sites.size),
      tn("fleet.online", online), tn("fleet.alarmed", all.filter(alarmed).length)].join(" · ");
    if (!all.length) {
      body.replaceChildren(h("div.empty", h("p", t("fleet.empty")),
        h("p.muted", t("fleet.empty_hint"))));
      return;
    }
    body.replaceChildren(...groups.map(([siteId, g]) => h(
      "section.site",
      { dataset: { siteId } },
      h("h2.site-name", g.name, h("span.count", ` · ${tn("fleet.packs", g.items.length)}`)),
      h("div.table-wrap", table(g.items)),
    )));
  }

  async function refresh() {
    try {
      const data = await api.fleet();
      setItems(data.batteries || []);
      render();
    } catch (err) {
      if (err instanceof AuthError) window.dispatchEvent(new Event("tbms:auth"));
      else summary.textContent = t("fleet.load_failed", { error: err.message });
    }
  }

  const data = await api.fleet();
  setItems(data.batteries || []);
  render();

  const off = live.on((msg) => {
    if (msg.type === "sample") {
      const it = items.get(msg.battery_id);
      if (!it) {
        refresh(); // a pack we have not seen yet
        return;
      }
      const sample = msg.sample || {};
      it.latest = { ...(it.latest || {}), ...sample };
      Object.assign(it, derive(it.latest));
      if (msg.connectivity) it.connectivity = msg.connectivity;
      if (sample.ts) it.last_seen = sample.ts;
      if (Array.isArray(sample.faults)) it.alarms = sample.faults;
      dirty = true;
    } else if (msg.type === "heartbeat") {
      for (const b of msg.heartbeat?.batteries || []) {
        const it = items.get(b.battery_id);
        if (it && LINK_TO_CONN[b.link_state]) {
          it.connectivity = LINK_TO_CONN[b.link_state];
          it.link_state = b.link_state;
          dirty = true;
        }
      }
    }
  });

  const tick = setInterval(() => {
    if (dirty) render();
    else for (const el of body.querySelectorAll(".ago")) el.textContent = ago(el.dataset.ts);
  }, 1000);
  // Connectivity also changes with silence (offline), which only the server can judge.
  const poll = setInterval(refresh, 30000);

  return () => {
    off();
    clearInterval(tick);
    clearInterval(poll);
  };
}
