// The dashboard's shell: hash router, session, live connection, service worker.

import { renderAlarms } from "./alarms.js";
import { renderRules } from "./rules.js";
import { AuthError, clearSession, getToken, getUser, live } from "./api.js";
import { renderDevice, renderDevices } from "./device.js";
import { renderFleet } from "./fleet.js";
import { renderLogin } from "./login.js";
import { renderPack } from "./pack.js";
import { renderTokens } from "./tokens.js";
import { initI18n, langSwitch, t } from "./i18n.js";
import { h } from "./util.js";

const root = document.getElementById("app");
const topbar = document.getElementById("topbar");
let cleanup = null;

const routes = [
  [/^#\/login$/, () => renderLogin(root, { onLogin: () => go("#/fleet") })],
  [/^#\/fleet$/, () => renderFleet(root)],
  [/^#\/pack\/([^/]+)$/, (m) => renderPack(root, decodeURIComponent(m[1]))],
  [/^#\/alarms$/, () => renderAlarms(root)],
  [/^#\/rules$/, () => renderRules(root)],
  [/^#\/devices$/, () => renderDevices(root)],
  [/^#\/device\/([^/]+)$/, (m) => renderDevice(root, decodeURIComponent(m[1]))],
  [/^#\/tokens$/, () => renderTokens(root)],
];

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const hash = location.hash || "#/fleet";
  const signedIn = Boolean(getToken());
  if (!signedIn && hash !== "#/login") return go("#/login");
  if (signedIn && hash === "#/login") return go("#/fleet");
  topbar.hidden = !signedIn;
  if (signedIn) live.start();
  else live.stop();
  for (const a of topbar.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", hash.startsWith(`#/${a.dataset.nav}`) ||
      (a.dataset.nav === "fleet" && hash.startsWith("#/pack")) ||
      (a.dataset.nav === "devices" && hash.startsWith("#/device")));
  }
  const user = getUser();
  document.getElementById("logout").title = user ? t("nav.signed_in_as", { email: user.email }) : "";
  for (const [re, view] of routes) {
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

// Views report an expired session this way (e.g. a failed background refresh).
window.addEventListener("tbms:auth", signOut);
document.getElementById("logout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);


if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js").catch((err) => console.warn("service worker not registered", err));
}

// Nothing is rendered before the catalogue is loaded (its misses would be real misses).
initI18n().finally(() => {
  const dot = document.getElementById("live-dot");
  live.onState((state) => {
    dot.dataset.state = state;
    dot.title = t({ open: "live.open", connecting: "live.connecting" }[state] || "live.closed");
  });
  document.getElementById("logout").before(langSwitch());
  route();
});
