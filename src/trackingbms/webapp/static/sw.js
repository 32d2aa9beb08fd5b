// Service worker: keeps the app shell available offline, on both origins that serve it (the server, and a
// gateway's LAN address in direct mode: each origin has its own worker and cache). Data never goes through
// the cache: the server's /api/, the gateway's /local/ and the probes are left to the network (the app keeps
// its direct-mode history in IndexedDB, localdb.js).
const CACHE = "tbms-shell-v17";
const SHELL = [
  "/",
  "/manifest.webmanifest",
  "/static/style.css",
  "/static/faults.json",
  "/static/faults.fr.json",
  "/static/i18n/en.json",
  "/static/i18n/fr.json",
  "/static/js/app.js",
  "/static/js/api.js",
  "/static/js/util.js",
  "/static/js/i18n.js",
  "/static/js/login.js",
  "/static/js/fleet.js",
  "/static/js/pack.js",
  "/static/js/charts.js",
  "/static/js/device.js",
  "/static/js/tokens.js",
  "/static/js/alarms.js",
  "/static/js/health.js",
  "/static/js/rules.js",
  "/static/js/mode.js",
  "/static/js/direct.js",
  "/static/js/directviews.js",
  "/static/js/idb.js",
  "/static/js/localdb.js",
  "/static/js/relay.js",
  "/static/js/ble.js",
  "/static/vendor/uPlot.iife.min.js",
  "/static/vendor/uPlot.min.css",
  "/static/icons/icon.svg",
  "/static/icons/icon-192.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

// Network first so that an upgraded server is picked up at once; the cache answers when offline.
self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin) return;
  // Only the app's own page and shell files; /api/, /local/, /healthz, /docs and the rest: the network.
  if (req.mode === "navigate" ? url.pathname !== "/" : !SHELL.includes(url.pathname)) return;
  const key = req.mode === "navigate" ? "/" : req;
  event.respondWith(
    // A navigation request cannot be re-made with options, so only asset requests skip the HTTP cache.
    (req.mode === "navigate" ? fetch(req) : fetch(req, { cache: "no-cache" }))
      .then((resp) => {
        if (resp.ok) {
          const copy = resp.clone();
          caches.open(CACHE).then((c) => c.put(key, copy));
        }
        return resp;
      })
      .catch(() => caches.match(key, { ignoreSearch: true }).then((hit) => hit || Response.error())),
  );
});
