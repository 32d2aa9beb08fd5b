// Automatic mode: server mode when the server answers, else direct mode when the gateway that served the
// app answers, else offline (the kept history only). Decided on start, on the browser's online / offline
// events and by a periodic probe; listeners hear every change, so going back online needs no user action.
//
// Where the app came from matters (browsers allow a page to talk to its own origin freely):
// - served by the server: the server is this origin; direct mode is not possible from here (an https page
//   may not fetch an http LAN address, and the gateway is another origin);
// - served by a gateway (http://<gateway>:8081/): the gateway is this origin; the server is the URL the
//   gateway reports in /local/v1/state (`server_urls`: `local_api.server_url`, else its http(s) uplinks),
//   remembered here so that it is known offline too.

import { getToken, setApiBase } from "./api.js";
import { gw, LanTokenError } from "./direct.js";

const ORIGIN_KEY = "tbms.origin";
const SERVERS_KEY = "tbms.serverUrls";
const PIN_KEY = "tbms.pinDirect";
const PROBE_MS = 10000;
const TIMEOUT_MS = 8000; // generous: a busy server (or phone) must not flip the app to offline

export const MODES = ["server", "direct", "offline"];

class Mode {
  constructor() {
    this.mode = "starting";
    this.origin = localStorage.getItem(ORIGIN_KEY) || "unknown"; // "server" | "gateway" | "unknown"
    this.serverUrls = JSON.parse(localStorage.getItem(SERVERS_KEY) || "[]");
    this.serverUrl = null; // the one that answered last
    this.serverReachable = false;
    this.gatewayReachable = false;
    this.needsLanToken = false;
    this.gatewayState = null;
    this.since = Date.now();
    this.listeners = new Set();
    this.busy = null;
  }

  get servedByGateway() {
    return this.origin === "gateway";
  }

  /** Direct mode chosen by the user while the server answers (no account at hand): until they sign in. */
  get pinnedDirect() {
    return sessionStorage.getItem(PIN_KEY) === "1";
  }

  pinDirect(on) {
    if (on) sessionStorage.setItem(PIN_KEY, "1");
    else sessionStorage.removeItem(PIN_KEY);
    this.#decide();
  }

  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  start() {
    window.addEventListener("online", () => this.check());
    window.addEventListener("offline", () => this.check());
    setInterval(() => this.check(), PROBE_MS);
    return this.check();
  }

  /** Probe both ends and decide; concurrent calls share one probe. */
  check() {
    if (!this.busy) this.busy = this.#probe().finally(() => (this.busy = null));
    return this.busy;
  }

  async #probeGateway() {
    try {
      const state = await gw.state(TIMEOUT_MS);
      this.gatewayState = state;
      this.needsLanToken = false;
      return true;
    } catch (err) {
      if (err instanceof LanTokenError) {
        this.needsLanToken = true;
        return true; // it answers; the app asks for the LAN token
      }
      return false;
    }
  }

  /** A server that answered last time gets a second chance before the app leaves server mode: one slow
   * answer on a busy server (or phone) is not an outage. */
  async #probeServer(url, answeredLastTime) {
    if (await this.#probeServerOnce(url)) return true;
    return answeredLastTime && navigator.onLine !== false ? this.#probeServerOnce(url) : false;
  }

  async #probeServerOnce(url) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      // cross-origin from a gateway: "no-cors" tells reachable (an opaque answer) from not (a network
      // error) without needing the server's CORS for this probe
      const resp = await fetch(`${url}/healthz`, {
        cache: "no-store",
        signal: ctl.signal,
        mode: url ? "no-cors" : "same-origin",
      });
      return resp.type === "opaque" || resp.ok;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  async #learnOrigin() {
    if (this.origin !== "unknown") return;
    // a gateway answers /local/v1/state (200, or 401 when a LAN token is set); the server does not (404)
    try {
      const resp = await fetch("/local/v1/state", { cache: "no-store" });
      this.origin = resp.status === 200 || resp.status === 401 ? "gateway" : "server";
      localStorage.setItem(ORIGIN_KEY, this.origin);
    } catch {
      /* no network: stays unknown until it answers */
    }
  }

  async #probe() {
    await this.#learnOrigin();
    if (this.servedByGateway) {
      this.gatewayReachable = await this.#probeGateway();
      const urls = this.gatewayState?.gateway?.server_urls;
      if (Array.isArray(urls)) {
        this.serverUrls = urls;
        localStorage.setItem(SERVERS_KEY, JSON.stringify(urls));
      }
      const was = this.serverReachable ? this.serverUrl : null;
      this.serverUrl = null;
      for (const url of this.serverUrls) {
        if (await this.#probeServer(url, url === was)) {
          this.serverUrl = url;
          break;
        }
      }
      this.serverReachable = this.serverUrl !== null;
      if (this.serverUrl) setApiBase(this.serverUrl);
    } else {
      this.gatewayReachable = false;
      this.serverReachable = await this.#probeServer("", this.serverReachable);
      this.serverUrl = "";
    }
    this.#decide();
  }

  #decide() {
    let mode = "offline";
    // in direct mode the user may stay on the gateway while the server answers (no account at hand)
    if (this.serverReachable && !(this.pinnedDirect && !getToken() && this.gatewayReachable)) mode = "server";
    else if (this.gatewayReachable) mode = "direct";
    if (mode === this.mode) return;
    const from = this.mode;
    this.mode = mode;
    this.since = Date.now();
    document.documentElement.dataset.mode = mode;
    for (const fn of this.listeners) {
      try {
        fn(mode, from);
      } catch (err) {
        console.error("mode listener failed", err);
      }
    }
  }
}

export const mode = new Mode();
