// Messages and locale formatting.
//
// Catalogs are JSON files, /ui/i18n/<lang>/<catalog>.json: flat objects of key → message. A
// message is a string with {name} placeholders, or, for counts, an object of plural forms
// ({"one": "...", "other": "..."}, chosen by Intl.PluralRules from params.count; "other" when
// a form is missing). `common` is always loaded; the shell loads a page's own catalog before
// the page renders and makes it the page catalog.
//
// t("catalog.key") looks in that catalog when "catalog" is a loaded catalog's name; any other
// key is looked up in the page catalog, then in common. A missing message answers the key
// itself (visible, so it gets noticed) and warns once in the console.
//
// Formatting (fmt) follows the browser: its time zone, and its locale where it speaks the
// chosen language (en-GB stays en-GB under "en"); otherwise the chosen language's own. The
// API's times are µs since the epoch, UTC.

export const LANGUAGES = ["en", "pt-BR"];
const STORE_KEY = "vms.lang";

/** @type {Map<string, Record<string, string | Record<string, string>>>} */
const catalogs = new Map(); // "<lang>/<catalog>" → messages
let language = initialLanguage();
let pageCatalog = "common";
const warned = new Set();

function stored() {
  try {
    return localStorage.getItem(STORE_KEY);
  } catch {
    return null; // storage refused: not remembered, no harm
  }
}

function initialLanguage() {
  const chosen = stored();
  if (chosen && LANGUAGES.includes(chosen)) return chosen;
  for (const l of navigator.languages || [navigator.language]) {
    if (/^pt\b/i.test(l)) return "pt-BR";
    if (/^en\b/i.test(l)) return "en";
  }
  return "en";
}

/** The language of the interface ("en" or "pt-BR"). */
export function getLanguage() {
  return language;
}

/** Loads a catalog of the current language (once); throws when it cannot be had. */
export async function loadCatalog(name) {
  const key = `${language}/${name}`;
  if (catalogs.has(key)) return;
  const url = `/ui/i18n/${language}/${encodeURIComponent(name)}.json`;
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(`catalog ${key}: HTTP ${r.status}`);
  catalogs.set(key, await r.json());
}

/** Makes `name` the catalog that plain keys are looked up in first (the shell does this). */
export function setPageCatalog(name) {
  pageCatalog = name || "common";
}

/**
 * Switches the language and remembers it (localStorage). Resolves once `common` and the page
 * catalog of the new language are loaded; the shell then renders again.
 */
export async function setLanguage(lang) {
  if (!LANGUAGES.includes(lang)) throw new Error(`unknown language ${lang}`);
  try {
    localStorage.setItem(STORE_KEY, lang);
  } catch {
    // not remembered: this tab still switches
  }
  language = lang;
  document.documentElement.lang = lang;
  await loadCatalog("common");
  if (pageCatalog !== "common") await loadCatalog(pageCatalog);
  formats.clear();
  window.dispatchEvent(new CustomEvent("vms:language", { detail: lang }));
}

function lookup(catalog, key) {
  return catalogs.get(`${language}/${catalog}`)?.[key];
}

/**
 * The message for `key` with `params` put in its {placeholders}.
 * @param {string} key "catalog.key", or a key of the page catalog (or common)
 * @param {Record<string, unknown>} [params]
 * @returns {string}
 */
export function t(key, params) {
  let message;
  const dot = key.indexOf(".");
  if (dot > 0 && catalogs.has(`${language}/${key.slice(0, dot)}`)) {
    message = lookup(key.slice(0, dot), key.slice(dot + 1));
  }
  if (message === undefined) message = lookup(pageCatalog, key) ?? lookup("common", key);
  if (message === undefined) {
    if (!warned.has(`${language}:${key}`)) {
      warned.add(`${language}:${key}`);
      console.warn(`i18n: no message "${key}" in ${language}`);
    }
    return key;
  }
  if (typeof message === "object") {
    const n = Number(params?.count ?? 0);
    message = message[plural().select(n)] ?? message.other ?? "";
  }
  if (!params) return message;
  return message.replace(/\{(\w+)\}/g, (whole, name) => {
    const v = params[name];
    if (v === undefined || v === null) return whole;
    return typeof v === "number" ? fmt.number(v) : String(v);
  });
}

// --- formatting ------------------------------------------------------------------------------

const formats = new Map();

/** The locale for numbers and dates: the browser's own when it speaks the chosen language. */
export function locale() {
  const base = language.split("-")[0];
  for (const l of navigator.languages || [navigator.language]) {
    if (l && l.split("-")[0].toLowerCase() === base) return l;
  }
  return language;
}

function cached(kind, make) {
  let f = formats.get(kind);
  if (!f) {
    f = make(locale());
    formats.set(kind, f);
  }
  return f;
}

function plural() {
  return cached("plural", (l) => new Intl.PluralRules(l));
}

const dateOf = (us) => new Date(Math.floor(Number(us) / 1000));

const UNITS = ["byte", "kilobyte", "megabyte", "gigabyte", "terabyte", "petabyte"];

export const fmt = {
  /** µs since the epoch → date and time, in the browser's zone. */
  dateTime(us) {
    return cached("dateTime", (l) =>
      new Intl.DateTimeFormat(l, { dateStyle: "short", timeStyle: "medium" })).format(dateOf(us));
  },
  /** µs since the epoch → time of day, with seconds. */
  time(us) {
    return cached("time", (l) => new Intl.DateTimeFormat(l, { timeStyle: "medium" }))
      .format(dateOf(us));
  },
  /** µs since the epoch → the date. */
  date(us) {
    return cached("date", (l) => new Intl.DateTimeFormat(l, { dateStyle: "medium" }))
      .format(dateOf(us));
  },
  /** Seconds → "42 s", "3 min 05 s", "2 h 07 min"; under 10 s with a tenth. */
  duration(s) {
    const v = Math.max(0, Number(s) || 0);
    const n = (x, digits = 0) =>
      new Intl.NumberFormat(locale(), { maximumFractionDigits: digits }).format(x);
    if (v < 10) return `${n(Math.round(v * 10) / 10, 1)} s`;
    if (v < 60) return `${n(Math.round(v))} s`;
    const total = Math.round(v);
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const sec = total % 60;
    const two = (x) => String(x).padStart(2, "0");
    if (h >= 24) {
      const d = Math.floor(h / 24);
      return `${n(d)} d ${two(h % 24)} h`;
    }
    if (h > 0) return `${n(h)} h ${two(m)} min`;
    return `${n(m)} min ${two(sec)} s`;
  },
  /** A byte count → "1.5 GB" (SI units, as Intl names them). */
  bytes(b) {
    let v = Math.max(0, Number(b) || 0);
    let i = 0;
    while (v >= 1000 && i < UNITS.length - 1) {
      v /= 1000;
      i += 1;
    }
    return cached(`bytes-${i}`, (l) =>
      new Intl.NumberFormat(l, {
        style: "unit",
        unit: UNITS[i],
        unitDisplay: "short",
        maximumFractionDigits: i === 0 ? 0 : 1,
      })).format(v);
  },
  /** A number in the locale's way. */
  number(x) {
    return cached("number", (l) => new Intl.NumberFormat(l, { maximumFractionDigits: 2 }))
      .format(Number(x));
  },
};
