// Devices (gateways): link state per battery, last contact, queue backlog from the heartbeat.

import { api, live } from "./api.js";
import { ago, fill, fmt, fmtDuration, fmtTime, h, parseTs } from "./util.js";

const LINK = {
  ok: { label: "ok", cls: "ok" },
  degraded: { label: "degraded", cls: "warn" },
  asleep: { label: "BMS asleep", cls: "sleep" },
  disconnected: { label: "disconnected", cls: "bad" },
};

function linkBadge(state) {
  const l = LINK[state] || { label: state || "unknown", cls: "muted" };
  return h(`span.badge.conn-${l.cls}`, { dataset: { linkState: state || "" } }, l.label);
}

function backlog(hb) {
  if (!hb) return "–";
  const depth = hb.queue_depth ?? 0;
  if (!depth) return "empty";
  const oldest = parseTs(hb.oldest_queued_ts);
  const age = oldest === null ? "" : `, oldest ${fmtDuration((Date.now() - oldest) / 1000)} old`;
  return `${depth} sample${depth === 1 ? "" : "s"} queued${age}`;
}

/** The gateway's clock against the server's (the server measures it at each heartbeat). */
function clockSkew(hb) {
  const skew = hb?.clock_skew_s;
  if (skew === null || skew === undefined) return h("span.muted", "–");
  const off = fmtDuration(Math.abs(skew));
  if (hb.clock_ok !== false) return h("span.clock-ok", Math.abs(skew) < 1 ? "in step" : `${off} ${skew > 0 ? "ahead" : "behind"}`);
  return h("span.clock-bad", `${off} ${skew > 0 ? "ahead" : "behind"}: `,
    skew > 0 ? "samples from the future are refused; set the gateway's clock (NTP)" : "set the gateway's clock (NTP)");
}

function summaryLinks(hb) {
  const bats = hb?.batteries || [];
  if (!bats.length) return h("span.muted", "–");
  return h("span.links", bats.map((b) => h("span.link-chip", `${b.battery_id} `, linkBadge(b.link_state))));
}

export async function renderDevices(root) {
  const body = h("div.devices-body");
  root.replaceChildren(h("section.devices", h("div.page-head", h("h1", "Devices")), body));
  let devices = await api.devices();

  function render() {
    if (!devices.length) {
      body.replaceChildren(h("div.empty", h("p", "No devices yet."),
        h("p.muted", "Provision a gateway with `trackingbms admin provision-device`.")));
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
            h("dt", "Last contact"), h("dd", h("span.ago", { dataset: { ts: d.last_contact || "" } }, ago(d.last_contact))),
            h("dt", "Uplink"), h("dd", d.heartbeat?.uplink || "–"),
            h("dt", "Queue"), h("dd.backlog", backlog(d.heartbeat)),
            h("dt", "Batteries"), h("dd", summaryLinks(d.heartbeat)),
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
  root.replaceChildren(h("section.device", { dataset: { deviceId } }, h("a.back", { href: "#/devices" }, "← Devices"), body));

  function render() {
    const hb = d.heartbeat;
    const bats = hb?.batteries || [];
    fill(body,
      h("div.title-row", h("h1", d.name || d.device_id)),
      d.name && d.name !== d.device_id ? h("p.muted", d.device_id) : null,
      h(
        "section.card",
        h("h2", "Gateway"),
        h("dl.kv",
          h("dt", "Last contact"),
          h("dd", h("span.ago#last-contact", { dataset: { ts: d.last_contact || "" }, title: fmtTime(d.last_contact) },
            ago(d.last_contact))),
          h("dt", "Queue backlog"), h("dd#queue-backlog", backlog(hb)),
          h("dt", "Uplink"), h("dd", hb?.uplink || "–"),
          h("dt", "Version"), h("dd", hb?.version || "–"),
          h("dt", "Uptime"), h("dd", fmtDuration(hb?.uptime_s)),
          h("dt", "Clock"), h("dd#clock-skew", clockSkew(hb)),
          h("dt", "Disk budget used"), h("dd", hb?.disk_used_pct == null ? "–" : fmt(hb.disk_used_pct, 1, "%")),
          h("dt", "Config version"), h("dd", hb?.config_version ?? "–"),
        ),
        hb ? null : h("p.muted", "No heartbeat received yet."),
      ),
      h(
        "section.card",
        h("h2", "BMS links"),
        bats.length
          ? h("div.table-wrap", h(
              "table.links-table",
              h("thead", h("tr", ["Battery", "Link", "Since", "Frames ok / bad", "Last error"].map((x) => h("th", x)))),
              h("tbody", bats.map((b) => h(
                "tr",
                { dataset: { batteryId: b.battery_id } },
                h("td", { dataset: { label: "Battery" } }, h("a", { href: `#/pack/${encodeURIComponent(b.battery_id)}` }, b.battery_id)),
                h("td", { dataset: { label: "Link" } }, linkBadge(b.link_state)),
                h("td", { dataset: { label: "Since" } }, h("span", { title: fmtTime(b.since) }, ago(b.since))),
                h("td.num", { dataset: { label: "Frames" } }, `${b.frames_good ?? "–"} / ${b.frames_bad ?? "–"}`),
                h(`td${b.last_error ? ".err" : ""}`, { dataset: { label: "Last error" } }, b.last_error || "–"),
              ))),
            ))
          : h("p.muted", "The gateway has not reported any battery links yet."),
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
