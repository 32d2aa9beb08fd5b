// The app's shell: hash router, mode (server / direct / offline, see mode.js), session, live connections,
// service worker. The same files run on the server's origin and on a gateway's (direct mode).

import { renderAlarms } from "./alarms.js";
import { renderRules } from "./rules.js";
import { AuthError, clearSession, getToken, getUser, live } from "./api.js";
import { renderDevice, renderDevices } from "./device.js";
import { direct, lanToken } from "./direct.js";
import { renderDirectFleet, renderDirectPack, renderGateway, renderLanToken } from "./directviews.js";
import { renderFleet } from "./fleet.js";
import { renderLogin } from "./login.js";
import { mode } from "./mode.js";
import { renderPack } from "./pack.js";
import { renderTokens } from "./tokens.js";
import { initI18n, langSwitch, t } from "./i18n.js";
import { h } from "./util.js";

const root = document.getElementById("app");
const topbar = document.getElementById("topbar");
const modeBadge = document.getElementById("mode");
let cleanup = null;

const serverRoutes = [
  [/^#\/fleet$/, () => renderFleet(root)],
  [/^#\/pack\/([^/]+)$/, (m) => renderPack(root, decodeURIComponent(m[1]))],
  [/^#\/alarms$/, () => renderAlarms(root)],
  [/^#\/rules$/, () => renderRules(root)],
  [/^#\/devices$/, () => renderDevices(root)],
  [/^#\/device\/([^/]+)$/, (m) => renderDevice(root, decodeURIComponent(m[1]))],
  [/^#\/tokens$/, () => renderTokens(root)],
  [/^#\/gateway$/, () => renderGateway(root)], // only reachable on a gateway's origin (nav hidden elsewhere)
];

const directRoutes = [
  [/^#\/fleet$/, () => renderDirectFleet(root)],
  [/^#\/pack\/([^/]+)$/, (m) => renderDirectPack(root, decodeURIComponent(m[1]))],
  [/^#\/gateway$/, () => renderGateway(root)],
];

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

/** Which set of views the current mode uses: "server", "direct" (also offline on a gateway's origin:
 * the history kept on the phone), "server-offline" (the server's origin with no server). */
function viewSet() {
  if (mode.mode === "server") return "server";
  if (mode.mode === "direct" || mode.servedByGateway) return "direct";
  return mode.mode === "starting" ? "starting" : "server-offline";
}

function showMode() {
  modeBadge.dataset.mode = mode.mode;
  modeBadge.textContent = t(`mode.${mode.mode}`);
  modeBadge.title = t(`mode.${mode.mode}_title`);
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const hash = location.hash || "#/fleet";
  const views = viewSet();
  showMode();
  if (views === "starting") return;
  const signedIn = Boolean(getToken());
  if (views === "server") {
    if (!signedIn && hash !== "#/login") return go("#/login");
    if (signedIn && hash === "#/login") return go("#/fleet");
  } else if (hash === "#/login") {
    return go("#/fleet");
  }
  const serverViews = views === "server" && signedIn;
  topbar.hidden = views === "server" && !signedIn;
  if (serverViews) live.start();
  else live.stop();
  for (const a of topbar.querySelectorAll("[data-nav]")) {
    const only = a.dataset.only; // "server" | "direct" | "gateway-origin"
    a.hidden = (only === "server" && !serverViews) || (only === "direct" && views !== "direct") ||
      (only === "gateway-origin" && !mode.servedByGateway);
    a.classList.toggle("active", hash.startsWith(`#/${a.dataset.nav}`) ||
      (a.dataset.nav === "fleet" && hash.startsWith("#/pack")) ||
      (a.dataset.nav === "devices" && hash.startsWith("#/device")));
  }
  const logout = document.getElementById("logout");
  logout.hidden = !serverViews;
  const user = getUser();
  logout.title = user ? t("nav.signed_in_as", { email: user.email }) : "";

  if (views === "server" && !signedIn) {
    renderLogin(root, { onLogin: () => { mode.pinDirect(false); go("#/fleet"); relayIfPossible(); } });
    if (mode.servedByGateway) {
      // the top bar (and its mode indicator) is hidden on the sign-in page: say the mode here too
      root.querySelector("form")?.prepend(h("p.login-direct",
        h("span.mode-badge#login-mode", { dataset: { mode: mode.mode }, title: t("mode.server_title") }, t("mode.server"))));
    }
    if (mode.servedByGateway && mode.gatewayReachable) {
      // no account at hand beside the pack: stay on the gateway (direct mode) until signing in
      root.querySelector("form")?.append(h("p.login-direct", h("button.link-button#stay-direct",
        { type: "button", onclick: () => mode.pinDirect(true) }, t("direct.stay"))));
    }
    return;
  }
  if (views === "server-offline") {
    root.replaceChildren(h("div.error-box#server-offline", h("h2", t("mode.offline")), h("p", t("mode.server_offline"))));
    return;
  }
  if (views === "direct" && mode.needsLanToken && !lanToken()) {
    renderLanToken(root);
    return;
  }
  for (const [re, view] of views === "server" ? serverRoutes : directRoutes) {
    const m = re.exec(hash);
    if (!m) continue;
    try {
      cleanup = (await view(m)) || null;
    } catch (err) {
      if (err instanceof AuthError) return signOut();
      console.error(err);
      root.replaceChildren(h("div.error-box", h("h2", t("error.title")), h("p", err.message)));
    }
    return;
  }
  go("#/fleet");
}

function signOut() {
  clearSession();
  live.stop();
  go("#/login");
}

/** The phone relay (relay.js) on a gateway's origin: with the server answering and a login, it carries the
 * gateway's unsent samples there (and what it carried earlier); beside the gateway with no server, it
 * carries them in the phone's outbox. On every mode change, after signing in, and every RELAY_EVERY_MS. */
const RELAY_EVERY_MS = 15000;
async function relayIfPossible() {
  if (!mode.servedByGateway) return;
  try {
    const relay = await import("./relay.js");
    if (mode.serverReachable && getToken()) {
      const res = await relay.relayUnsent({ serverUrl: mode.serverUrl, token: getToken(), lanToken: lanToken(),
        gateway: mode.gatewayReachable && !mode.needsLanToken });
      if (res.auth) window.dispatchEvent(new Event("tbms:auth"));
    } else if (mode.gatewayReachable && !mode.needsLanToken) {
      await relay.collectUnsent({ lanToken: lanToken() });
    }
  } catch (err) {
    console.warn("relay not run", err);
  }
}

// Views report an expired session this way (e.g. a failed background refresh).
window.addEventListener("tbms:auth", signOut);
document.getElementById("logout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js").catch((err) => console.warn("service worker not registered", err));
}

// Nothing is rendered before the catalogue is loaded (its misses would be real misses).
initI18n().finally(async () => {
  const dot = document.getElementById("live-dot");
  // the dot follows the live connection of the current mode: the server's socket, or the gateway's
  const paintDot = () => {
    if (mode.mode === "server") {
      dot.dataset.state = live.state;
      dot.title = t({ open: "live.open", connecting: "live.connecting" }[live.state] || "live.closed");
    } else {
      dot.dataset.state = direct.connected ? "open" : "closed";
      dot.title = t(direct.connected ? "direct.live_open" : "direct.live_closed");
    }
  };
  live.onState(paintDot);
  direct.on((msg) => {
    if (msg.type === "connection") paintDot();
  });
  document.getElementById("logout").before(langSwitch());
  mode.on((now) => {
    // the phone keeps collecting from the gateway whenever it answers (direct mode's history, the relay)
    if (mode.servedByGateway && mode.gatewayReachable) direct.start();
    else direct.stop();
    relayIfPossible();
    route().finally(paintDot);
  });
  showMode();
  await mode.start();
  setInterval(relayIfPossible, RELAY_EVERY_MS);
  if (mode.mode === "starting") route();
});
