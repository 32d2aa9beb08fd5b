// Sign-in form.

import { login } from "./api.js";
import { langSwitch, t } from "./i18n.js";
import { h } from "./util.js";

export function renderLogin(root, { onLogin }) {
  const error = h("p.form-error#login-error", { role: "alert", hidden: true });
  const email = h("input#email", { type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input#password", {
    type: "password",
    name: "password",
    autocomplete: "current-password",
    required: true,
  });
  const remember = h("input#remember", { type: "checkbox", name: "remember", checked: true });
  const submit = h("button.primary#login-submit", { type: "submit" }, t("login.submit"));
  const form = h(
    "form.login-card",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        error.hidden = true;
        submit.disabled = true;
        try {
          await login(email.value.trim(), password.value, remember.checked);
          onLogin();
        } catch (err) {
          error.textContent = err.message;
          error.hidden = false;
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("div.login-brand", h("img", { src: "/static/icons/icon.svg", alt: "", width: 40, height: 40 }), h("h1", "TrackingBMS")),
    h("p.muted", t("login.intro")),
    h("label", { for: "email" }, t("login.email")),
    email,
    h("label", { for: "password" }, t("login.password")),
    password,
    h("label.check", remember, " ", t("login.remember")),
    error,
    submit,
    h("p.login-lang", langSwitch("login-lang")),
  );
  root.replaceChildren(h("div.login-wrap", form));
  email.focus();
}
