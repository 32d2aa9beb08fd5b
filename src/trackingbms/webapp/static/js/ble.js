// Bluetooth direct mode: the gateway's GATT service (docs/ble.md), payload format version 1.
//
// The decoder mirrors trackingbms.gateway.ble.codec (Python) byte for byte; tests/web/test_ble_js.py
// decodes vectors the Python side makes, in Chromium, and compares every value. Hand-written (DataView)
// because the format is small and the app vendors nothing it can avoid. No imports: the module works
// in any page that loads it (server mode, the gateway-served app).
//
// Web Bluetooth exists in Chrome / Edge on Android, desktop and ChromeOS (secure contexts: https or
// localhost). Safari on iOS and Firefox have none: bluetoothSupport() says so in words the app shows.

export const VERSION = 1;
export const SERVICE_UUID = "71de0001-bf98-4cc9-9194-44c4f14e3ad9";
export const LIVE_UUID = "71de0002-bf98-4cc9-9194-44c4f14e3ad9";
export const COMMAND_UUID = "71de0003-bf98-4cc9-9194-44c4f14e3ad9";
export const RESPONSE_UUID = "71de0004-bf98-4cc9-9194-44c4f14e3ad9";
export const NAME_PREFIX = "TrackingBMS-";
export const DEFAULT_MTU = 23;

const KIND_READING = 0x01;
const KIND_REQUEST = 0x10;
const KIND_RESPONSE = 0x11;
const MORE = 0x80;
const MAX_FRAGMENTS = 128;

export const CMD = { info: 0x01, getReading: 0x02, history: 0x03, setUplink: 0x20, setWifi: 0x21, setPoll: 0x22 };
export const STATUS = [
  "ok", "bad_request", "unknown_command", "pairing_required", "locked_out",
  "not_found", "unsupported", "invalid_value", "internal_error", "bad_version",
];
export const ALL_BATTERIES = 0xff;
// append-only tables, in the order of trackingbms.model (SOURCES, STATES) and the codec (LINK_STATES)
const SOURCES = ["a5-uart", "a5-rs485", "a5-can", "a5-ble", "d2-rs485", "d2-ble", "sim", "p81-rs485", "hkms-can"];
const STATES = ["idle", "charging", "discharging"];
const LINK_STATES = ["ok", "degraded", "asleep", "disconnected"];
const MASK_FIELDS = [
  "source", "voltage_v", "current_a", "soc_pct", "remaining_ah", "cycles", "state", "flags",
  "fault_code", "cells_mv", "temps_c", "balancing", "faults", "errors",
];
const FLAG_FIELDS = ["charge_mos", "discharge_mos", "charger_connected", "load_connected"];

export class PayloadError extends Error {}

// ------------------------------------------------------------------------------------------ fragments

export function payloadSize(mtu) {
  return Math.max(1, mtu - 3 - 1);
}

export function fragment(message, mtu = DEFAULT_MTU) {
  const size = payloadSize(mtu);
  const parts = [];
  for (let i = 0; i < message.length; i += size) parts.push(message.subarray(i, i + size));
  if (!parts.length) parts.push(new Uint8Array(0));
  if (parts.length > MAX_FRAGMENTS) throw new PayloadError(`message of ${message.length} bytes is too long`);
  return parts.map((p, i) => {
    const out = new Uint8Array(p.length + 1);
    out[0] = (i < parts.length - 1 ? MORE : 0) | i;
    out.set(p, 1);
    return out;
  });
}

// Fragments in, whole messages out; a fragment out of order drops that message only.
export class Reassembler {
  constructor() {
    this.chunks = [];
    this.next = 0;
    this.dropped = 0;
  }

  feed(bytes) {
    const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes.buffer || bytes);
    if (!data.length) {
      this.dropped++;
      return null;
    }
    const index = data[0] & 0x7f;
    if (index === 0) {
      if (this.chunks.length || this.next > 0) this.dropped++;
      this.chunks = [];
    } else if (index !== this.next) {
      if (this.next !== -1) this.dropped++;
      this.chunks = [];
      this.next = -1;
      return null;
    }
    this.chunks.push(data.slice(1));
    if (data[0] & MORE) {
      this.next = index + 1;
      return null;
    }
    const total = this.chunks.reduce((n, c) => n + c.length, 0);
    const message = new Uint8Array(total);
    let at = 0;
    for (const c of this.chunks) {
      message.set(c, at);
      at += c.length;
    }
    this.chunks = [];
    this.next = 0;
    return message;
  }
}

// ---------------------------------------------------------------------------------------------- reader

const utf8 = new TextDecoder("utf-8", { fatal: true });
const utf8Encoder = new TextEncoder();

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }
  need(n) {
    if (this.pos + n > this.bytes.length) {
      throw new PayloadError(`message cut short: needs ${this.pos + n} bytes, has ${this.bytes.length}`);
    }
    const at = this.pos;
    this.pos += n;
    return at;
  }
  u8() { return this.view.getUint8(this.need(1)); }
  u16() { return this.view.getUint16(this.need(2)); }
  i16() { return this.view.getInt16(this.need(2)); }
  u32() { return this.view.getUint32(this.need(4)); }
  u48() {
    const at = this.need(6);
    return this.view.getUint16(at) * 2 ** 32 + this.view.getUint32(at + 2);
  }
  text() {
    const n = this.u8();
    const at = this.need(n);
    try {
      return utf8.decode(this.bytes.subarray(at, at + n));
    } catch {
      throw new PayloadError("a string is not UTF-8");
    }
  }
  list(read) {
    const n = this.u8();
    const out = [];
    for (let i = 0; i < n; i++) out.push(read());
    return out;
  }
  end() {
    if (this.pos !== this.bytes.length) {
      throw new PayloadError(`${this.bytes.length - this.pos} unexpected bytes at the end of the message`);
    }
  }
}

function header(r, kind) {
  const version = r.u8();
  if (version !== VERSION) {
    throw new PayloadError(`format version ${version}; this app speaks version ${VERSION} (update it)`);
  }
  const got = r.u8();
  if (kind !== undefined && got !== kind) throw new PayloadError(`message kind ${got}, expected ${kind}`);
  return got;
}

function readReading(r) {
  const battery = r.u8();
  const sample = { seq: r.u48(), ts: new Date(r.u48()).toISOString() };
  const mask = r.u16();
  if (mask >> MASK_FIELDS.length) throw new PayloadError(`unknown fields in mask ${mask} (a newer gateway?)`);
  const has = (name) => (mask & (1 << MASK_FIELDS.indexOf(name))) !== 0;
  if (has("source")) {
    const code = r.u8();
    if (code >= SOURCES.length) throw new PayloadError(`unknown source code ${code}`);
    sample.source = SOURCES[code];
  }
  if (has("voltage_v")) sample.voltage_v = r.u16() / 100;
  if (has("current_a")) sample.current_a = r.i16() / 10;
  if (has("soc_pct")) sample.soc_pct = r.u16() / 10;
  if (has("remaining_ah")) sample.remaining_ah = r.u32() / 1000;
  if (has("cycles")) sample.cycles = r.u16();
  if (has("state")) {
    const code = r.u8();
    if (code >= STATES.length) throw new PayloadError(`unknown state code ${code}`);
    sample.state = STATES[code];
  }
  if (has("flags")) {
    const flags = r.u8();
    FLAG_FIELDS.forEach((name, bit) => {
      if (flags & (1 << bit)) sample[name] = (flags & (1 << (bit + 4))) !== 0;
    });
  }
  if (has("fault_code")) sample.fault_code = r.u8();
  if (has("cells_mv")) sample.cells_mv = r.list(() => r.u16());
  if (has("temps_c")) sample.temps_c = r.list(() => r.u8() - 40);
  if (has("balancing")) sample.balancing = r.list(() => r.u8());
  if (has("faults")) sample.faults = r.list(() => r.text());
  if (has("errors")) {
    sample.errors = {};
    const n = r.u8();
    for (let i = 0; i < n; i++) {
      const key = r.text();
      sample.errors[key] = r.text();
    }
  }
  return { battery, sample };
}

// A live notification's message → {battery: index, sample: {seq, ts, ...wire fields}}.
export function decodeReading(message) {
  const r = new Reader(message);
  header(r, KIND_READING);
  const out = readReading(r);
  r.end();
  return out;
}

function readInfo(r) {
  const info = {
    device: r.text(),
    version: r.text(),
    uplink: r.text() || null,
    queue_depth: r.u32(),
    wifi_settable: (r.u8() & 1) === 1,
  };
  info.uplinks = r.list(() => ({ name: r.text(), url: r.text() }));
  info.batteries = r.list(() => {
    const battery_id = r.text();
    const code = r.u8();
    if (code >= LINK_STATES.length) throw new PayloadError(`unknown link state code ${code}`);
    return {
      battery_id,
      link_state: LINK_STATES[code],
      poll_interval_s: r.u32() / 1000,
      oldest_seq: r.u48(),
      next_seq: r.u48(),
    };
  });
  return info;
}

// A response → {request_id, command, status (name), message | body}.
export function decodeResponse(message) {
  const r = new Reader(message);
  header(r, KIND_RESPONSE);
  const resp = { request_id: r.u8(), command: r.u8() };
  const status = r.u8();
  resp.status = STATUS[status] || `status_${status}`;
  resp.message = "";
  resp.body = {};
  if (status !== 0) {
    resp.message = r.text();
  } else if (resp.command === CMD.info) {
    resp.body = readInfo(r);
  } else if (resp.command === CMD.getReading) {
    resp.body = readReading(r);
  } else if (resp.command === CMD.history) {
    const battery = r.u8();
    const more = r.u8() === 1;
    const next_seq = r.u48();
    const samples = r.list(() => {
      const got = readReading(r);
      if (got.battery !== battery) throw new PayloadError(`history page of battery ${battery} holds battery ${got.battery}`);
      return got.sample;
    });
    resp.body = { battery, more, next_seq, samples };
  }
  r.end();
  return resp;
}

// ---------------------------------------------------------------------------------------------- writer

class Writer {
  constructor() {
    this.bytes = [];
  }
  u8(v) { this.bytes.push(v & 0xff); }
  u16(v) { this.bytes.push((v >> 8) & 0xff, v & 0xff); }
  u32(v) { this.u16(Math.floor(v / 65536)); this.u16(v % 65536); }
  u48(v) { this.u16(Math.floor(v / 2 ** 32)); this.u32(v % 2 ** 32); }
  text(s) {
    // cut at 255 bytes on a character boundary, as the Python side does
    const chars = Array.from(s || "");
    let raw = utf8Encoder.encode(chars.join(""));
    while (raw.length > 255) {
      chars.pop();
      raw = utf8Encoder.encode(chars.join(""));
    }
    this.u8(raw.length);
    this.bytes.push(...raw);
  }
  done() { return new Uint8Array(this.bytes); }
}

// {command, request_id, pairing_code, args} → message bytes (args as in docs/ble.md).
export function encodeRequest({ command, request_id = 0, pairing_code = "", args = {} }) {
  const w = new Writer();
  w.u8(VERSION);
  w.u8(KIND_REQUEST);
  w.u8(request_id);
  w.u8(command);
  w.text(pairing_code);
  if (command === CMD.getReading) {
    w.u8(args.battery);
  } else if (command === CMD.history) {
    w.u8(args.battery);
    w.u48(args.from_seq);
    w.u8(args.max_count ?? 255);
  } else if (command === CMD.setUplink) {
    w.text(args.name || "");
    w.text(args.url);
  } else if (command === CMD.setWifi) {
    w.text(args.ssid);
    w.text(args.psk || "");
  } else if (command === CMD.setPoll) {
    w.u8(args.battery ?? ALL_BATTERIES);
    w.u32(args.interval_ms);
  }
  return w.done();
}

// ------------------------------------------------------------------------------------- Web Bluetooth

// {ok: true} where Web Bluetooth can work, else {ok: false, reason, text} in words for the user.
// Web Bluetooth needs a secure context: the app installed from the server (https, cached for offline use)
// has it; the gateway's own http://<gateway>:8081/ page does not (it has the LAN instead).
export function bluetoothSupport(nav = globalThis.navigator, secure = globalThis.isSecureContext) {
  if (!nav || !nav.bluetooth) {
    const ua = (nav && nav.userAgent) || "";
    if (/iPhone|iPad|iPod/.test(ua)) {
      return { ok: false, reason: "ios", text: "Safari on iPhone and iPad has no Web Bluetooth: use the gateway's Wi-Fi page (http://<gateway>:8081/) or Chrome on Android or a computer." };
    }
    return { ok: false, reason: "no-web-bluetooth", text: "This browser has no Web Bluetooth: use Chrome or Edge (Android, Windows, macOS, Linux, ChromeOS)." };
  }
  if (secure === false) {
    return { ok: false, reason: "insecure", text: "Bluetooth needs the app opened over https:// (the app installed from the server works offline); this http:// page can use the gateway's Wi-Fi instead." };
  }
  return { ok: true, reason: "", text: "" };
}

// A notification's DataView → its bytes (the view may sit inside a larger buffer).
function bytesOf(view) {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

// Asks the user to pick a gateway, connects, reads its info. Returns a session:
// {info, batteryIds, request(command, args, pairingCode), history(batteryId, fromSeq), close()};
// onReading({battery_id, ...sample, via: "ble"}) for every live reading, onDisconnect(reason).
export async function connectBluetooth({
  onReading = () => {},
  onDisconnect = () => {},
  nav = globalThis.navigator,
  secure = globalThis.isSecureContext,
} = {}) {
  const support = bluetoothSupport(nav, secure);
  if (!support.ok) throw new Error(support.text);
  const device = await nav.bluetooth.requestDevice({
    filters: [{ namePrefix: NAME_PREFIX }],
    optionalServices: [SERVICE_UUID],
  });
  const server = await device.gatt.connect();
  const service = await server.getPrimaryService(SERVICE_UUID);
  const [live, command, response] = await Promise.all(
    [LIVE_UUID, COMMAND_UUID, RESPONSE_UUID].map((u) => service.getCharacteristic(u)),
  );
  // Chrome negotiates the largest MTU itself but does not tell the page: writes go at the default size,
  // which every gateway accepts (docs/ble.md: the split rule)
  const mtu = DEFAULT_MTU;
  const liveParts = new Reassembler();
  const respParts = new Reassembler();
  const pending = new Map();
  let nextId = 1;
  let batteryIds = [];
  let chain = Promise.resolve();
  const withId = (battery, sample) => ({ battery_id: batteryIds[battery] ?? `#${battery}`, ...sample, via: "ble" });

  live.addEventListener("characteristicvaluechanged", (ev) => {
    const message = liveParts.feed(bytesOf(ev.target.value));
    if (!message) return;
    try {
      const { battery, sample } = decodeReading(message);
      onReading(withId(battery, sample));
    } catch (err) {
      console.warn("Bluetooth: unreadable reading", err);
    }
  });
  response.addEventListener("characteristicvaluechanged", (ev) => {
    const message = respParts.feed(bytesOf(ev.target.value));
    if (!message) return;
    const resp = decodeResponse(message);
    const waiter = pending.get(resp.request_id);
    if (waiter) waiter(resp);
  });
  device.addEventListener("gattserverdisconnected", () => {
    for (const waiter of pending.values()) waiter({ status: "disconnected", message: "the gateway disconnected" });
    onDisconnect("the gateway disconnected");
  });
  await response.startNotifications();
  await live.startNotifications();

  // one request at a time: the gateway answers them in order on one characteristic
  function request(cmd, args = {}, pairingCode = "") {
    const run = async () => {
      const id = nextId++ & 0xff;
      const answer = new Promise((resolve, reject) => {
        const timer = setTimeout(() => { pending.delete(id); reject(new Error("no answer from the gateway within 20 s")); }, 20000);
        pending.set(id, (resp) => { clearTimeout(timer); pending.delete(id); resolve(resp); });
      });
      for (const part of fragment(encodeRequest({ command: cmd, request_id: id, pairing_code: pairingCode, args }), mtu)) {
        await command.writeValueWithResponse(part);
      }
      return answer;
    };
    const result = chain.then(run, run);
    chain = result.catch(() => {});
    return result;
  }

  async function checked(cmd, args, pairingCode) {
    const resp = await request(cmd, args, pairingCode);
    if (resp.status !== "ok") throw new Error(`${resp.message} (${resp.status})`);
    return resp.body;
  }

  const info = await checked(CMD.info);
  batteryIds = info.batteries.map((b) => b.battery_id);

  async function history(batteryId, fromSeq = 0, onPage = () => {}) {
    const battery = batteryIds.indexOf(batteryId);
    if (battery < 0) throw new Error(`no battery ${batteryId} on this gateway`);
    const all = [];
    let seq = fromSeq;
    for (;;) {
      const page = await checked(CMD.history, { battery, from_seq: seq, max_count: 0 });
      const samples = page.samples.map((s) => withId(battery, s));
      all.push(...samples);
      onPage(samples);
      if (!page.more || !page.samples.length) return all;
      seq = page.next_seq;
    }
  }

  return {
    device,
    info,
    mtu,
    batteryIds,
    request,
    checked,
    history,
    close: () => device.gatt.disconnect(),
  };
}

// The app's Bluetooth button (directviews.js) calls connect({onSample}): resolves once connected and the
// gateway's info read; each reading arrives as {battery_id, ...sample fields, via: "ble"}.
export function connect({ onSample = () => {}, onDisconnect = () => {}, ...rest } = {}) {
  return connectBluetooth({ onReading: onSample, onDisconnect, ...rest });
}
