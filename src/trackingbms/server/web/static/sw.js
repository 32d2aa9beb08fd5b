// Service worker: keeps the app shell available offline. API calls and the live socket are never cached.
const CACHE = "tbms-shell-v4";
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
  if (req.method !== "GET" || url.origin !== self.location.origin || url.pathname.startsWith("/api/")) return;
  // Only the dashboard's own page; /docs and other server pages are left to the network.
  if (req.mode === "navigate" && url.pathname !== "/") return;
  const key = req.mode === "navigate" ? "/" : req;
  event.respondWith(
    // A navigation request cannot be re-made with options, so only asset requests skip the HTTP cache.
    (req.mode === "navigate" ? fetch(req) : fetch(req, { cache: "no-cache" }))
      .then((resp) => {
        if (resp.ok && (req.mode === "navigate" || SHELL.includes(url.pathname))) {
          const copy = resp.clone();
          caches.open(CACHE).then((c) => c.put(key, copy));
        }
        return resp;
      })
      .catch(() => caches.match(key).then((hit) => hit || Response.error())),
  );
});
