// Devices (gateways): link state per battery, last contact, queue backlog from the heartbeat.

import { api, live } from "./api.js";
import { num, t, tn } from "./i18n.js";
import { ago, fill, fmt, fmtDuration, fmtTime, h, parseTs } from "./util.js";

const LINK = {
  ok: { label: "link.ok", cls: "ok" },
  degraded: { label: "link.degraded", cls: "warn" },
  asleep: { label: "link.asleep", cls: "sleep" },
  disconnected: { label: "link.disconnected", cls: "bad" },
};

function linkBadge(state) {
  const l = LINK[state];
  return h(`span.badge.conn-${l ? l.cls : "muted"}`, { dataset: { linkState: state || "" } },
    l ? t(l.label) : state || t("common.unknown"));
}

function backlog(hb) {
  if (!hb) return "–";
  const depth = hb.queue_depth ?? 0;
  if (!depth) return t("device.queue_empty");
  const oldest = parseTs(hb.oldest_queued_ts);
  const queued = tn("device.queued", depth);
  if (oldest === null) return queued;
  return `${queued}, ${t("device.oldest", { age: fmtDuration((Date.now() - oldest) / 1000) })}`;
}

/** The gateway's clock against the server's (the server measures it at each heartbeat). */
function clockSkew(hb) {
  const skew = hb?.clock_skew_s;
  if (skew === null || skew === undefined) return h("span.muted", "–");
  const off = fmtDuration(Math.abs(skew));
  const side = t(skew > 0 ? "device.clock_ahead" : "device.clock_behind", { off });
  if (hb.clock_ok !== false) return h("span.clock-ok", Math.abs(skew) < 1 ? t("device.clock_in_step") : side);
  return h("span.clock-bad", `${side}: `, t(skew > 0 ? "device.clock_future_refused" : "device.clock_set_ntp"));
}

function summaryLinks(hb) {
  const bats = hb?.batteries || [];
  if (!bats.length) return h("span.muted", "–");
  return h("span.links", bats.map((b) => h("span.link-chip", `${b.battery_id} `, linkBadge(b.link_state))));
}

/** Which path the gateway's last acknowledged samples took ("phone": relayed by the app) and how long ago. */
function deliveredVia(hb) {
  if (!hb?.via) return "–";
  const path = hb.via === "phone" ? t("device.path_phone") : hb.via;
  return hb.delivered_ts ? `${path}, ${ago(hb.delivered_ts)}` : path;
}

export async function renderDevices(root) {
  const body = h("div.devices-body");
  root.replaceChildren(h("section.devices", h("div.page-head", h("h1", t("devices.title"))), body));
  let devices = await api.devices();

  function render() {
    if (!devices.length) {
      body.replaceChildren(h("div.empty", h("p", t("devices.empty")),
        h("p.muted", t("devices.empty_hint"))));
      return;
    }
    body.replaceChildren(
      h("div.device-cards", devices.map((d) => {
        const href = `#/device/${encodeURIComponent(d.device_id)}`;
        return h(
          "a.card.device-card",
          { href, dataset: { deviceId: d.device_id } },
          h("h2", d.name || d.device_id),
          d.name && d.name !== d.device_id ? h("p.muted", d.device_id) : null,
          h("dl.kv",
            h("dt", t("device.last_contact")),
            h("dd", h("span.ago", { dataset: { ts: d.last_contact || "" } }, ago(d.last_contact))),
            h("dt", t("device.uplink")), h("dd", d.heartbeat?.uplink || "–"),
            h("dt", t("device.queue")), h("dd.backlog", backlog(d.heartbeat)),
            h("dt", t("device.batteries")), h("dd", summaryLinks(d.heartbeat)),
          ),
        );
      })),
    );
  }
  render();

  const off = live.on((msg) => {
    if (msg.type !== "heartbeat") return;
    const d = devices.find((x) => x.device_id === msg.device_id);
    if (!d) return;
    d.heartbeat = msg.heartbeat;
    d.last_contact = new Date().toISOString();
    render();
  });
  const tick = setInterval(() => {
    for (const el of body.querySelectorAll(".ago")) el.textContent = ago(el.dataset.ts);
  }, 1000);
  const poll = setInterval(async () => {
    try {
      devices = await api.devices();
      render();
    } catch {
      /* keep what we show */
    }
  }, 30000);
  return () => {
    off();
    clearInterval(tick);
    clearInterval(poll);
  };
}

export async function renderDevice(root, deviceId) {
  const d = await api.device(deviceId);
  const body = h("div.device-body");
  root.replaceChildren(h("section.device", { dataset: { deviceId } }, h("a.back", { href: "#/devices" }, `← ${t("devices.title")}`), body));

  function render() {
    const hb = d.heartbeat;
    const bats = hb?.batteries || [];
    fill(body,
      h("div.title-row", h("h1", d.name || d.device_id)),
      d.name && d.name !== d.device_id ? h("p.muted", d.device_id) : null,
      h(
        "section.card",
        h("h2", t("device.gateway")),
        h("dl.kv",
          h("dt", t("device.last_contact")),
          h("dd", h("span.ago#last-contact", { dataset: { ts: d.last_contact || "" }, title: fmtTime(d.last_contact) },
            ago(d.last_contact))),
          h("dt", t("device.queue_backlog")), h("dd#queue-backlog", backlog(hb)),
          h("dt", t("device.uplink")), h("dd", hb?.uplink || "–"),
          h("dt", t("device.via")), h("dd#delivered-via", deliveredVia(hb)),
          h("dt", t("device.version")), h("dd", hb?.version || "–"),
          h("dt", t("device.uptime")), h("dd", fmtDuration(hb?.uptime_s)),
          h("dt", t("device.clock")), h("dd#clock-skew", clockSkew(hb)),
          h("dt", t("device.disk_used")), h("dd", hb?.disk_used_pct == null ? "–" : fmt(hb.disk_used_pct, 1, "%")),
          h("dt", t("device.config_version")), h("dd", hb?.config_version ?? "–"),
        ),
        hb ? null : h("p.muted", t("device.no_heartbeat")),
      ),
      hb?.uplinks?.length
        ? h(
            "section.card",
            h("h2", t("device.paths")),
            h("div.table-wrap", h(
              "table.paths-table",
              h("thead", h("tr", ["priority", "path", "state", "last_error"].map((k) => h("th", t(`device.col.${k}`))))),
              h("tbody", hb.uplinks.map((u) => h(
                "tr",
                { dataset: { path: u.name, state: u.state || "" } },
                h("td.num", { dataset: { label: t("device.col.priority") } }, u.priority ?? "–"),
                h("td", { dataset: { label: t("device.col.path") } }, u.name === "phone" ? t("device.path_phone") : u.name),
                h("td", { dataset: { label: t("device.col.state") } }, h(`span.path-state.path-${u.state || "unknown"}`, u.state ? t(`device.path_state.${u.state}`) : "–")),
                h(`td${u.last_error ? ".err" : ""}`, { dataset: { label: t("device.col.last_error") } }, u.last_error || "–"),
              ))),
            )),
          )
        : null,
      h(
        "section.card",
        h("h2", t("device.links")),
        bats.length
          ? h("div.table-wrap", h(
              "table.links-table",
              h("thead", h("tr", ["battery", "link", "since", "frames", "last_error"].map((k) => h("th", t(`device.col.${k}`))))),
              h("tbody", bats.map((b) => h(
                "tr",
                { dataset: { batteryId: b.battery_id } },
                h("td", { dataset: { label: t("device.col.battery") } }, h("a", { href: `#/pack/${encodeURIComponent(b.battery_id)}` }, b.battery_id)),
                h("td", { dataset: { label: t("device.col.link") } }, linkBadge(b.link_state)),
                h("td", { dataset: { label: t("device.col.since") } }, h("span", { title: fmtTime(b.since) }, ago(b.since))),
                h("td.num", { dataset: { label: t("device.col.frames") } }, `${num(b.frames_good, 0)} / ${num(b.frames_bad, 0)}`),
                h(`td${b.last_error ? ".err" : ""}`, { dataset: { label: t("device.col.last_error") } }, b.last_error || "–"),
              ))),
            ))
          : h("p.muted", t("device.no_links")),
      ),
    );
  }
  render();

  const off = live.on((msg) => {
    if (msg.type !== "heartbeat" || msg.device_id !== deviceId) return;
    d.heartbeat = msg.heartbeat;
    d.last_contact = new Date().toISOString();
    render();
  });
  const tick = setInterval(() => {
    const el = body.querySelector("#last-contact");
    if (el) el.textContent = ago(el.dataset.ts);
  }, 1000);
  return () => {
    off();
    clearInterval(tick);
  };
}
