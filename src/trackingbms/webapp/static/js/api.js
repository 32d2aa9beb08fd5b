// Talking to the server: the user's token, JSON requests, the live WebSocket.

import { t } from "./i18n.js";

const TOKEN_KEY = "tbms.token";
const USER_KEY = "tbms.user";

export class AuthError extends Error {}

// Where the server is: "" (this origin) when the server served the app; its URL when a gateway served it
// (direct mode's origin, see mode.js), and then every call is cross-origin (the server allows it: CORS).
let base = "";

export function setApiBase(url) {
  base = (url || "").replace(/\/+$/, "");
}

export function apiBase() {
  return base;
}

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) || sessionStorage.getItem(TOKEN_KEY);
}

export function getUser() {
  const raw = localStorage.getItem(USER_KEY) || sessionStorage.getItem(USER_KEY);
  try {
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

export function clearSession() {
  for (const store of [localStorage, sessionStorage]) {
    store.removeItem(TOKEN_KEY);
    store.removeItem(USER_KEY);
  }
}

export async function login(email, password, remember) {
  const resp = await fetch(`${base}/api/v1/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password }),
  });
  if (!resp.ok) {
    throw new Error(resp.status === 401 || resp.status === 403 ? t("login.wrong") : await errorText(resp));
  }
  const body = await resp.json();
  clearSession();
  // "Keep me signed in" survives closing the browser; otherwise the tab's session only.
  const store = remember ? localStorage : sessionStorage;
  store.setItem(TOKEN_KEY, body.access_token);
  store.setItem(USER_KEY, JSON.stringify(body.user || { email }));
  return body.user;
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
  } catch {
    /* not JSON */
  }
  return t("error.server", { status: resp.status, text: resp.statusText });
}

async function request(path, { raw = false } = {}) {
  const token = getToken();
  if (!token) throw new AuthError("not signed in");
  const resp = await fetch(base + path, { headers: { Authorization: `Bearer ${token}` } });
  if (resp.status === 401) {
    clearSession();
    throw new AuthError("session expired");
  }
  if (!resp.ok) throw new Error(await errorText(resp));
  return raw ? resp : resp.json();
}

async function send(method, path, body) {
  const token = getToken();
  if (!token) throw new AuthError("not signed in");
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401) {
    clearSession();
    throw new AuthError("session expired");
  }
  if (!resp.ok) throw new Error(await errorText(resp));
  return resp.status === 204 ? null : resp.json();
}

export const api = {
  fleet: () => request("/api/v1/fleet"),
  sites: () => request("/api/v1/sites"),
  health: (id) => request(`/api/v1/batteries/${encodeURIComponent(id)}/health`),
  alarms: (params = {}) => request("/api/v1/alarms?" + new URLSearchParams(params)),
  ack: (alarmId) => send("POST", `/api/v1/alarms/${alarmId}/ack`),
  rules: () => request("/api/v1/alarm-rules"),
  createRule: (body) => send("POST", "/api/v1/alarm-rules", body),
  updateRule: (id, body) => send("PUT", `/api/v1/alarm-rules/${id}`, body),
  deleteRule: (id) => send("DELETE", `/api/v1/alarm-rules/${id}`),
  battery: (id) => request(`/api/v1/batteries/${encodeURIComponent(id)}`),
  history: (id, from, to, points = 500) =>
    request(
      `/api/v1/batteries/${encodeURIComponent(id)}/history?` +
        new URLSearchParams({ from, to, points: String(points) }),
    ),
  devices: () => request("/api/v1/devices"),
  device: (id) => request(`/api/v1/devices/${encodeURIComponent(id)}`),
  // The export needs the bearer header, so it is fetched and handed to the browser as a file.
  exportCsv: (id, from, to) =>
    request(`/api/v1/batteries/${encodeURIComponent(id)}/export.csv?` + new URLSearchParams({ from, to }), {
      raw: true,
    }),
};

/** One WebSocket for the whole app; reconnects with backoff; listeners get parsed messages. */
export class Live {
  constructor() {
    this.listeners = new Set();
    this.stateListeners = new Set();
    this.ws = null;
    this.retryMs = 1000;
    this.stopped = true;
    this.state = "closed";
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.#connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
    this.ws = null;
    this.#setState("closed");
  }

  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onState(fn) {
    this.stateListeners.add(fn);
    fn(this.state);
    return () => this.stateListeners.delete(fn);
  }

  #setState(state) {
    this.state = state;
    for (const fn of this.stateListeners) fn(state);
  }

  #connect() {
    const token = getToken();
    if (!token || this.stopped) return;
    const where = new URL(base || location.origin);
    const proto = where.protocol === "https:" ? "wss" : "ws";
    const prefix = where.pathname.replace(/\/+$/, "");
    const ws = new WebSocket(`${proto}://${where.host}${prefix}/api/v1/live?token=${encodeURIComponent(token)}`);
    this.ws = ws;
    this.#setState("connecting");
    ws.onopen = () => {
      this.retryMs = 1000;
      this.#setState("open");
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      for (const fn of this.listeners) {
        try {
          fn(msg);
        } catch (err) {
          console.error("live listener failed", err);
        }
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.#setState("closed");
      if (this.stopped) return;
      if (ev.code === 4401) {
        // the server refused the token (expired or revoked): sign in again rather than retry forever
        this.stop();
        window.dispatchEvent(new Event("tbms:auth"));
        return;
      }
      this.timer = setTimeout(() => this.#connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 30000);
    };
  }
}

export const live = new Live();
