// French and English: one JSON message catalogue per language (static/i18n/<lang>.json), a t(key, params)
// helper, Intl for numbers and dates. Hand-written (a dozen lines) because the dashboard has no build step
// and i18n libraries want one or are far larger than the need.

export const LANGS = { en: "English", fr: "Français" };
const LANG_KEY = "tbms.lang";

let lang = "en";
let messages = {};
let faults = {};
/** Keys asked for but missing from the catalogue: the browser test requires none. */
const misses = new Set();
window.__tbmsI18n = { misses, lang: () => lang };

/** The remembered choice, else the browser's first language we have, else English. */
export function pickLang() {
  const saved = localStorage.getItem(LANG_KEY);
  if (saved && saved in LANGS) return saved;
  for (const l of navigator.languages?.length ? navigator.languages : [navigator.language || "en"]) {
    const base = String(l).slice(0, 2).toLowerCase();
    if (base in LANGS) return base;
  }
  return "en";
}

async function getJson(url) {
  const resp = await fetch(url);
  if (!resp.ok) throw new Error(`${url}: ${resp.status}`);
  return resp.json();
}

/** Load the catalogue and fault texts for the picked language; translate the shell's data-i18n elements. */
export async function initI18n() {
  lang = pickLang();
  document.documentElement.lang = lang;
  try {
    [messages, faults] = await Promise.all([
      getJson(`/static/i18n/${lang}.json`),
      getJson(lang === "en" ? "/static/faults.json" : `/static/faults.${lang}.json`),
    ]);
  } catch (err) {
    console.warn("catalogue not loaded", err);
  }
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
}

export function currentLang() {
  return lang;
}

/** Remember the choice and reload, so every view is rendered again in the new language. */
export function setLang(l) {
  if (!(l in LANGS) || l === lang) return;
  localStorage.setItem(LANG_KEY, l);
  location.reload();
}

/** t("fleet.title") or t("pack.cell_title", {n: 3}): the message, with {name} replaced by params. */
export function t(key, params) {
  let s = messages[key];
  if (typeof s !== "string") {
    misses.add(key);
    s = key;
  }
  if (!params) return s;
  return s.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** Plural: t(`${key}.one`) or t(`${key}.other`) following the language's rules (French: 0 and 1 are "one"). */
export function tn(key, count, params) {
  const form = new Intl.PluralRules(lang).select(count) === "one" ? "one" : "other";
  return t(`${key}.${form}`, { count: num(count, 0), ...params });
}

/** The message of `key` if the catalogue has it, else `fallback` (not recorded as missing: custom rules). */
export function tOr(key, fallback) {
  return typeof messages[key] === "string" ? messages[key] : fallback;
}

/** An alarm rule's name: `rule.<id>` for built-in rules, the fault table for `fault:<name>`, else the
 *  server's text (a tenant's own rule). */
export function ruleName(ruleId, fallback) {
  const id = String(ruleId || "");
  if (id.startsWith("fault:")) return faultName(id.slice(6)) || fallback || id;
  return tOr(`rule.${id}`, fallback || id);
}

/** The fault table's text in the current language. */
export function faultName(name) {
  if (typeof faults[name] === "string") return faults[name];
  misses.add(`fault.${name}`);
  return null;
}

const numFormats = new Map();

/** A number with a fixed count of decimals for the locale ("3.25" / "3,25"); "–" when unknown. */
export function num(value, digits = 1, grouping = true) {
  if (value === null || value === undefined || value === "" || Number.isNaN(Number(value))) return "–";
  const key = `${digits}|${grouping}`;
  let f = numFormats.get(key);
  if (!f) {
    f = new Intl.NumberFormat(lang, { minimumFractionDigits: digits, maximumFractionDigits: digits, useGrouping: grouping });
    numFormats.set(key, f);
  }
  return f.format(Number(value));
}

let dateFormat = null;

/** Date and time for the locale, in the browser's time zone. */
export function dateTime(ms) {
  dateFormat ||= new Intl.DateTimeFormat(lang, { dateStyle: "short", timeStyle: "medium" });
  return dateFormat.format(new Date(ms));
}

/** uPlot's date templates (`{M}/{D}`, `{h}:{mm}{aa}`, `{h}{aa}\n{M}/{D}/{YY}`, …: US English) rendered in the
 *  page's language with the same parts (year, month, day, hour, minutes, seconds), line by line (an axis
 *  tick stacks the time over the date when the day changes): the charts' axes and legend. A line with
 *  no date or hour (`:{ss}`) reads the same everywhere and keeps uPlot's own format. */
export function chartDate(tpl) {
  const lines = tpl.split("\n").map((line) => {
    const has = (...names) => names.some((n) => line.includes(`{${n}}`));
    if (!has("YYYY", "YY", "M", "MM", "MMM", "MMMM", "D", "DD", "h", "H", "HH")) return window.uPlot.fmtDate(line);
    const o = {};
    if (has("YYYY")) o.year = "numeric";
    else if (has("YY")) o.year = "2-digit";
    if (has("MMMM")) o.month = "long";
    else if (has("MMM")) o.month = "short";
    else if (has("M", "MM")) o.month = "numeric";
    if (has("D", "DD")) o.day = "numeric";
    if (has("h", "H", "HH")) {
      o.hour = "numeric";
      if (has("mm")) o.minute = "2-digit";
      if (has("ss")) o.second = "2-digit";
    }
    const f = new Intl.DateTimeFormat(lang, o);
    return (date) => f.format(date);
  });
  return (date) => lines.map((fmt) => fmt(date)).join("\n");
}

/** The visible language switch (a select; the choice is remembered in localStorage). */
export function langSwitch(id = "lang-switch") {
  const sel = document.createElement("select");
  sel.id = id;
  sel.className = "lang-switch";
  sel.setAttribute("aria-label", t("lang.switch"));
  for (const [code, label] of Object.entries(LANGS)) {
    const o = document.createElement("option");
    o.value = code;
    o.lang = code;
    o.textContent = label;
    o.selected = code === lang;
    sel.append(o);
  }
  sel.addEventListener("change", () => setLang(sel.value));
  return sel;
}
