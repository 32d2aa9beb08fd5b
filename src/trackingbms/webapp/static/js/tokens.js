// API tokens for integrations (scripts, Grafana, Home Assistant): create, see once, revoke.

import { AuthError, clearSession, getToken } from "./api.js";
import { t as tr } from "./i18n.js";
import { fill, fmtTime, h } from "./util.js";

async function call(method, path, body) {
  const token = getToken();
  if (!token) throw new AuthError("not signed in");
  const resp = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (resp.status === 401) {
    clearSession();
    throw new AuthError("session expired");
  }
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const d = data.detail;
    throw new Error(typeof d === "string" ? d : Array.isArray(d) ? d.map((x) => x.msg).join("; ") : resp.statusText);
  }
  return data;
}

const iso = (ms) => (ms ? new Date(ms).toISOString() : null);

export async function renderTokens(root) {
  const list = h("div.tokens-list");
  const shown = h("div.token-shown");
  const error = h("p.error", { role: "alert" });
  const name = h("input#token-name", { name: "name", required: true, maxlength: 100, placeholder: tr("tokens.name_placeholder") });
  const scope = h("select#token-scope", { name: "scope" },
    h("option", { value: "read" }, tr("tokens.scope.read")), h("option", { value: "read-write" }, tr("tokens.scope.read-write")));
  const days = h("input#token-days", { name: "expires_days", type: "number", min: 1, max: 366, value: 90 });
  const form = h("form.token-form",
    h("label", tr("tokens.name"), " ", name), h("label", tr("tokens.scope"), " ", scope),
    h("label", tr("tokens.expires_days"), " ", days),
    h("button.primary", { type: "submit" }, tr("tokens.create")));

  root.replaceChildren(h("section.tokens",
    h("div.page-head", h("h1", tr("tokens.title"))),
    h("p.muted", tr("tokens.intro")),
    form, error, shown, list));

  async function refresh() {
    const tokens = await call("GET", "/api/v1/tokens");
    if (!tokens.length) return fill(list, h("p.muted", tr("tokens.none")));
    fill(list, h("div.table-wrap", h("table.tokens-table",
      h("thead", h("tr", ["name", "scope", "status", "created", "expires", "last_used"].map((k) => h("th", tr(`tokens.col.${k}`))), h("th"))),
      h("tbody", tokens.map((t) => h("tr", { dataset: { tokenId: String(t.id), status: t.status } },
        h("td", { dataset: { label: tr("tokens.col.name") } }, t.name),
        h("td", { dataset: { label: tr("tokens.col.scope") } }, tr(`tokens.scope.${t.scope}`)),
        h("td.token-status", { dataset: { label: tr("tokens.col.status") } }, tr(`tokens.status.${t.status}`)),
        h("td", { dataset: { label: tr("tokens.col.created") } }, fmtTime(iso(t.created_ms))),
        h("td", { dataset: { label: tr("tokens.col.expires") } }, fmtTime(iso(t.expires_ms))),
        h("td", { dataset: { label: tr("tokens.col.last_used") } },
          t.last_used_ms ? fmtTime(iso(t.last_used_ms)) : tr("time.never")),
        h("td", t.status === "active"
          ? h("button.revoke", { type: "button", onclick: () => revoke(t) }, tr("tokens.revoke"))
          : null),
      ))),
    )));
  }

  async function revoke(t) {
    if (!confirm(tr("tokens.revoke_confirm", { name: t.name }))) return;
    try {
      await call("DELETE", `/api/v1/tokens/${t.id}`);
      await refresh();
    } catch (err) {
      if (err instanceof AuthError) throw err;
      error.textContent = err.message;
    }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      const created = await call("POST", "/api/v1/tokens", {
        name: name.value, scope: scope.value, expires_days: Number(days.value),
      });
      fill(shown, h("div.card",
        h("p", h("strong", tr("tokens.created", { name: created.name, scope: tr(`tokens.scope.${created.scope}`) })),
          " — ", tr("tokens.copy_now")),
        h("code#new-token", created.token)));
      form.reset();
      await refresh();
    } catch (err) {
      if (err instanceof AuthError) return window.dispatchEvent(new Event("tbms:auth"));
      error.textContent = err.message;
    }
  });

  await refresh();
}
