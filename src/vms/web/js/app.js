// The shell: session (login, first administrator), navigation, the router that loads a page
// module per route, theme, language, keyboard shortcuts, toasts.
//
// Routes are hashes, #/<page>?a=1&b=2, so that a reload or a shared link lands on the same
// page with the same parameters and the server needs one URL only (/). A page is a module,
// js/pages/<name>.js, loaded when first visited:
//
//   export const catalog = "<name>";       // its messages, loaded before render
//   export function render(root, ctx) {     // root: an empty element; returns a cleanup
//     ...                                  // called on leaving (stop players, timers, sockets)
//   }
//
// ctx = { api, t, fmt, user, params, setParams(obj, {replace}), navigate(page, params),
//         toast(message, kind), shortcut(key, handler, labelKey), mediaToken, accessToken,
//         language }
// - params: URLSearchParams of the route; setParams merges obj into them (null, undefined or
//   "" removes a key) and writes the URL without rendering the page again (replace: true
//   replaces the history entry instead of adding one). Back and forward render the page again
//   with the parameters of that entry.
// - user: {id, name, role, permissions: [actions], cameras: "*" | [ids], camerasFor(action)}
//   from GET /api/v1/auth/me ("cameras" are those the user may view).
// - shortcut(key, handler, labelKey): "f", "?", "Escape", "Space", "ArrowLeft", "Shift+ArrowLeft",
//   "Ctrl+k"; a page's shortcut wins over the shell's; a handler that returns false lets the
//   key go on. Removed with the page. labelKey names its line in the "?" help.
//
// Traps:
// - Pages are mounted outside Preact's tree (PageHost never re-renders), so the chrome can
//   re-render (language, menu) without touching a page's DOM.
// - A route may change while a page module is still loading: each mount has a generation
//   number, and a stale one is dropped.
// - The session ends (refresh refused) while a page is open: the page is cleaned up, the login
//   shows, and the URL is left as it was, so logging in lands on the same page and parameters.

import { Component, render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import * as session from "./api.js";
import { accessToken, api, mediaToken } from "./api.js";
import { fmt, getLanguage, LANGUAGES, loadCatalog, setLanguage, setPageCatalog, t } from "./i18n.js";
import { Button, Dialog, ErrorBox, Empty, errorText, html, Icon, Spinner, toast, Toasts } from "./ui.js";

/** Pages in menu order, and the action a user must hold to see each. */
export const PAGES = [
  { name: "live", icon: "live", needs: "live" },
  { name: "playback", icon: "playback", needs: "playback" },
  { name: "events", icon: "events", needs: "view" },
  { name: "exports", icon: "exports", needs: "export" },
  { name: "cameras", icon: "cameras", needs: "manage" },
  { name: "users", icon: "users", needs: "admin" },
  { name: "system", icon: "system", needs: "admin" },
];
const LANGUAGE_NAMES = { en: "English", "pt-BR": "Português (Brasil)" };
const THEME_KEY = "vms.theme";

// --- user and routes ------------------------------------------------------------------------

function userOf(me) {
  const view = me.cameras?.view || [];
  const camerasFor = (action) => {
    const ids = me.cameras?.[action] || [];
    return ids.includes("*") ? "*" : ids;
  };
  return {
    id: me.user ? me.user.id : null,
    name: me.user ? me.user.name : me.via,
    role: me.user ? me.user.role : null,
    permissions: me.actions || [],
    cameras: view.includes("*") ? "*" : view,
    camerasFor,
  };
}

const allowed = (user, page) => user.permissions.includes(page.needs);
const visiblePages = (user) => PAGES.filter((p) => allowed(user, p));

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const name = decodeURIComponent(q < 0 ? raw : raw.slice(0, q));
  return { name, params: new URLSearchParams(q < 0 ? "" : raw.slice(q + 1)) };
}

function hashOf(name, params) {
  const query = params ? new URLSearchParams(params).toString() : "";
  return `#/${encodeURIComponent(name)}${query ? `?${query}` : ""}`;
}

// --- theme -----------------------------------------------------------------------------------

const darkQuery = matchMedia("(prefers-color-scheme: dark)");

function currentTheme() {
  const chosen = document.documentElement.dataset.theme;
  if (chosen === "light" || chosen === "dark") return chosen;
  return darkQuery.matches ? "dark" : "light";
}

function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  try {
    localStorage.setItem(THEME_KEY, theme);
  } catch {
    // not remembered across reloads; this page still switches
  }
}

// --- keyboard shortcuts ----------------------------------------------------------------------

const shortcuts = { page: [], shell: [] };

function parseKey(spec) {
  const parts = spec.split("+");
  let key = parts.pop();
  if (key === "") key = "+";
  if (key === "Space") key = " ";
  return { key, mods: new Set(parts.map((p) => p.toLowerCase())) };
}

function matches(spec, e) {
  const { key, mods } = parseKey(spec);
  if (e.ctrlKey !== mods.has("ctrl") || e.altKey !== mods.has("alt")) return false;
  if (e.metaKey !== mods.has("meta")) return false;
  if (key.length === 1 && !/[a-z]/i.test(key)) return e.key === key; // "?", "1": Shift varies
  if (e.shiftKey !== mods.has("shift")) return false;
  return key.length === 1 ? e.key.toLowerCase() === key.toLowerCase() : e.key === key;
}

function addShortcut(list, key, handler, labelKey) {
  const entry = { key, handler, labelKey };
  list.unshift(entry);
  return () => {
    const i = list.indexOf(entry);
    if (i >= 0) list.splice(i, 1);
  };
}

function typing(target) {
  if (!(target instanceof HTMLElement)) return false;
  return target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName);
}

function onKey(e) {
  if (e.defaultPrevented || e.isComposing) return;
  if (e.key !== "Escape" && typing(e.target)) return;
  if (document.querySelector("dialog[open]")) return; // a dialog has the keyboard
  for (const s of [...shortcuts.page, ...shortcuts.shell]) {
    if (matches(s.key, e) && s.handler(e) !== false) {
      e.preventDefault();
      return;
    }
  }
}

function keyLabel(spec) {
  const names = { " ": t("common.key.space"), ArrowLeft: "←", ArrowRight: "→", ArrowUp: "↑",
    ArrowDown: "↓", Escape: "Esc" };  // prettier-ignore
  const { key, mods } = parseKey(spec);
  return [...[...mods].map((m) => m[0].toUpperCase() + m.slice(1)),
    names[key] || (key.length === 1 ? key.toUpperCase() : key)].join(" + ");
}

function toggleFullscreen() {
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  else document.documentElement.requestFullscreen?.().catch(() => {});
}

// --- the page host (outside Preact's diffing) ------------------------------------------------

const router = {
  host: null, // <main>
  generation: 0,
  cleanup: null,
  page: null, // name of the page mounted
  user: null,
};

function unmountPage() {
  router.generation += 1;
  const done = router.cleanup;
  router.cleanup = null;
  router.page = null;
  shortcuts.page.length = 0;
  if (done) {
    try {
      done();
    } catch (e) {
      console.error("page cleanup failed", e);
    }
  }
  if (router.host) router.host.replaceChildren();
}

function showInHost(root, vnode) {
  render(vnode, root);
}

async function mountPage(user, name, params, attempt = 0) {
  unmountPage();
  const generation = router.generation;
  const host = router.host;
  if (!host) return;
  const root = document.createElement("div");
  root.className = `page page-${name}`;
  host.append(root);
  const page = PAGES.find((p) => p.name === name);
  document.title = `${page ? t(`common.nav.${name}`) : t("common.app")} · vms`;
  if (!page) {
    showInHost(root, html`<${Empty} icon="info" title=${t("common.page.unknown")}>
      <a href=${hashOf(visiblePages(user)[0]?.name || "live")}>${t("common.page.home")}</a><//>`);
    return;
  }
  if (!allowed(user, page)) {
    showInHost(root, html`<${Empty} icon="alert" title=${t("common.page.forbidden")} />`);
    return;
  }
  showInHost(root, html`<${Spinner} />`);
  let mod;
  try {
    // A failed import stays failed in the module map: a retry asks for another URL.
    mod = await import(attempt ? `./pages/${name}.js?retry=${attempt}` : `./pages/${name}.js`);
    if (mod.catalog) await loadCatalog(mod.catalog);
    if (typeof mod.render !== "function") throw new Error(`pages/${name}.js has no render()`);
  } catch (e) {
    if (generation !== router.generation) return;
    console.error(`page ${name} failed to load`, e);
    showInHost(root, html`<${ErrorBox} title=${t("common.page.load_failed")}
      onRetry=${() => mountPage(user, name, parseHash().params, attempt + 1)}>
      <p class="error-text">${String(e && e.message ? e.message : e)}</p><//>`);
    return;
  }
  if (generation !== router.generation) return;
  render(null, root);
  root.replaceChildren();
  setPageCatalog(mod.catalog || "common");
  const ctx = makeContext(user, name, params);
  router.page = name;
  try {
    const cleanup = mod.render(root, ctx);
    router.cleanup = typeof cleanup === "function" ? cleanup : null;
  } catch (e) {
    console.error(`page ${name} failed`, e);
    showInHost(root, html`<${ErrorBox} title=${t("common.page.failed")} error=${e} />`);
  }
}

function makeContext(user, name, params) {
  const ctx = {
    api, t, fmt, user, params, toast, mediaToken, accessToken,
    language: getLanguage(),
    setParams(changes, { replace = false } = {}) {
      for (const [k, v] of Object.entries(changes || {})) {
        if (v === null || v === undefined || v === "") ctx.params.delete(k);
        else ctx.params.set(k, String(v));
      }
      const hash = hashOf(name, ctx.params);
      if (hash !== location.hash) history[replace ? "replaceState" : "pushState"](null, "", hash);
    },
    navigate(page, next) {
      location.hash = hashOf(page, next);
    },
    shortcut(key, handler, labelKey) {
      return addShortcut(shortcuts.page, key, handler, labelKey);
    },
  };
  return ctx;
}

class PageHost extends Component {
  shouldComponentUpdate() {
    return false;
  }

  componentWillUnmount() {
    unmountPage();
    router.host = null;
  }

  render() {
    // The ref is set at commit, before the Shell's effect routes (effects run after).
    const keep = (el) => {
      if (el) router.host = el;
    };
    return html`<main id="page" class="page-host" tabindex="-1" ref=${keep}></main>`;
  }
}

// --- login and the first administrator -------------------------------------------------------

function Field({ id, label, ...input }) {
  return html`<label class="field" for=${id}><span>${label}</span>
    <input id=${id} name=${id} ...${input} /></label>`;
}

function LoginScreen({ setupNeeded, onDone, notice }) {
  const [mode, setMode] = useState(setupNeeded ? "setup" : "login");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const form = useRef(null);

  useEffect(() => {
    form.current?.querySelector("input")?.focus();
  }, [mode]);

  const submit = async (e) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget);
    const name = String(data.get("name") || "").trim();
    const password = String(data.get("password") || "");
    setError(null);
    if (mode === "setup" && password !== String(data.get("confirm") || "")) {
      setError(t("common.setup.mismatch"));
      return;
    }
    setBusy(true);
    try {
      if (mode === "setup") {
        try {
          await session.setup(String(data.get("token") || "").trim(), name, password);
        } catch (err) {
          if (err.status === 401) throw new Error(t("common.setup.wrong_token"));
          if (err.status === 409) throw new Error(t("common.setup.done_already"));
          throw err;
        }
      }
      await session.login(name, password);
      await onDone();
    } catch (err) {
      setBusy(false);
      if (err.status === 401) setError(t("common.login.wrong"));
      else if (err.status === 429) setError(t("common.login.rate_limited"));
      else setError(err instanceof Error && !err.status ? err.message : errorText(err));
    }
  };

  const setup = mode === "setup";
  return html`<div class="login">
    <form class="login-card" ref=${form} onSubmit=${submit}>
      <div class="brand brand-large"><img src="/ui/icon.svg" alt="" width="40" height="40" />
        <span>vms</span></div>
      <h1>${setup ? t("common.setup.title") : t("common.login.title")}</h1>
      ${notice ? html`<p class="notice">${notice}</p>` : null}
      ${setup ? html`<p class="hint">${t("common.setup.explain")}</p>` : null}
      ${setup ? html`<${Field} id="token" label=${t("common.setup.token")} required
        autocomplete="off" spellcheck="false" autocapitalize="off" />` : null}
      <${Field} id="name" label=${t("common.login.name")} required autocomplete="username"
        autocapitalize="off" spellcheck="false" />
      <${Field} id="password" type="password" label=${t("common.login.password")} required
        autocomplete=${setup ? "new-password" : "current-password"} />
      ${setup ? html`<${Field} id="confirm" type="password" required
        label=${t("common.setup.confirm")} autocomplete="new-password" />` : null}
      ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
      <${Button} kind="primary" type="submit" busy=${busy} class="btn-block">
        ${setup ? t("common.setup.submit") : t("common.login.submit")}<//>
      ${setupNeeded ? html`<button type="button" class="link"
          onClick=${() => { setError(null); setMode(setup ? "login" : "setup"); }}>
        ${setup ? t("common.setup.have_account") : t("common.setup.first_admin")}</button>`
        : null}
    </form>
    <${Preferences} compact />
  </div>`;
}

// --- the chrome ------------------------------------------------------------------------------

function Preferences({ compact = false }) {
  const [theme, setThemeState] = useState(currentTheme());
  useEffect(() => {
    const follow = () => setThemeState(currentTheme());
    darkQuery.addEventListener("change", follow);
    return () => darkQuery.removeEventListener("change", follow);
  }, []);
  const flip = () => {
    const next = theme === "dark" ? "light" : "dark";
    setTheme(next);
    setThemeState(next);
  };
  const label = theme === "dark" ? t("common.theme.to_light") : t("common.theme.to_dark");
  return html`<div class=${compact ? "prefs prefs-compact" : "prefs"}>
    <label class="lang-picker" title=${t("common.language")}>
      <${Icon} name="globe" />
      <span class="sr-only">${t("common.language")}</span>
      <select id="language" value=${getLanguage()}
        onChange=${(e) => setLanguage(e.currentTarget.value).catch((err) =>
          toast(errorText(err), "error"))}>
        ${LANGUAGES.map((l) => html`<option value=${l} lang=${l}>${LANGUAGE_NAMES[l]}</option>`)}
      </select>
    </label>
    <button type="button" id="theme" class="btn btn-ghost btn-icon" onClick=${flip}
      aria-label=${label} title=${label} data-theme-now=${theme}>
      <${Icon} name=${theme === "dark" ? "sun" : "moon"} /></button>
  </div>`;
}

function TopBar({ user, route, onLogout, onHelp }) {
  const [open, setOpen] = useState(false);
  useEffect(() => setOpen(false), [route]);
  useEffect(() => addShortcut(shortcuts.shell, "Escape", () => {
    if (!open) return false;
    setOpen(false);
    return true;
  }, "common.shortcuts.escape"), [open]);
  const pages = visiblePages(user);
  return html`<header class=${open ? "topbar menu-open" : "topbar"}>
    <a class="brand" href=${hashOf(pages[0]?.name || "live")}>
      <img src="/ui/icon.svg" alt="" width="28" height="28" /><span>vms</span></a>
    <button type="button" class="btn btn-ghost btn-icon menu-button" aria-expanded=${open}
      aria-controls="menu" onClick=${() => setOpen(!open)} aria-label=${t("common.menu")}>
      <${Icon} name=${open ? "close" : "menu"} /></button>
    <div class="menu" id="menu">
      <nav class="nav" aria-label=${t("common.nav.label")}>
        ${pages.map((p) => html`<a href=${hashOf(p.name)} data-page=${p.name}
            title=${t(`common.nav.${p.name}`)}
            class=${route === p.name ? "active" : ""}
            aria-current=${route === p.name ? "page" : undefined}>
          <${Icon} name=${p.icon} /><span>${t(`common.nav.${p.name}`)}</span></a>`)}
      </nav>
      <div class="toolbar">
        <${Preferences} />
        <button type="button" class="btn btn-ghost btn-icon" onClick=${onHelp}
          aria-label=${t("common.shortcuts.title")} title=${t("common.shortcuts.title")}>
          <${Icon} name="keyboard" /></button>
        <span class="who" title=${user.role || ""}><${Icon} name="user" />
          <span class="who-name">${user.name}</span></span>
        <button type="button" id="logout" class="btn btn-ghost btn-icon" onClick=${onLogout}
          aria-label=${t("common.logout")} title=${t("common.logout")}>
          <${Icon} name="logout" /></button>
      </div>
    </div>
  </header>`;
}

function ShortcutHelp({ onClose }) {
  const seen = new Set();
  const rows = [...shortcuts.page, ...shortcuts.shell].filter((s) => {
    if (!s.labelKey || seen.has(s.key)) return false;
    seen.add(s.key);
    return true;
  });
  return html`<${Dialog} title=${t("common.shortcuts.title")} onClose=${onClose}>
    <dl class="shortcuts">${rows.map((s) => html`<div class="shortcut">
      <dt><kbd>${keyLabel(s.key)}</kbd></dt><dd>${t(s.labelKey)}</dd></div>`)}</dl>
  <//>`;
}

function Shell() {
  const [phase, setPhase] = useState("boot"); // boot | login | ready | failed
  const [user, setUser] = useState(null);
  const [setupNeeded, setSetupNeeded] = useState(false);
  const [notice, setNotice] = useState(null);
  const [bootError, setBootError] = useState(null);
  const [route, setRoute] = useState(parseHash().name);
  const [help, setHelp] = useState(false);
  const [, setLang] = useState(getLanguage());

  const enter = async () => {
    const me = userOf(await api("/api/v1/auth/me"));
    router.user = me;
    setUser(me);
    setNotice(null);
    setPhase("ready");
  };

  const toLogin = async () => {
    try {
      setSetupNeeded(await session.setupNeeded());
    } catch {
      setSetupNeeded(false); // the login form is still the right thing to show
    }
    setPhase("login");
  };

  const start = async () => {
    setPhase("boot");
    try {
      if (session.mayHaveSession() && (await session.refresh())) await enter();
      else await toLogin();
    } catch (e) {
      setBootError(e);
      setPhase("failed");
    }
  };

  useEffect(() => {
    start();
    session.onSessionLost(() => {
      unmountPage();
      setNotice(t("common.login.expired"));
      toLogin();
    });
    const offs = [
      addShortcut(shortcuts.shell, "?", () => setHelp(true), "common.shortcuts.help"),
      addShortcut(shortcuts.shell, "f", toggleFullscreen, "common.shortcuts.fullscreen"),
    ];
    const language = () => {
      setLang(getLanguage());
      if (router.user && router.host) {
        const { name, params } = parseHash();
        mountPage(router.user, name, params);
      }
    };
    window.addEventListener("keydown", onKey);
    window.addEventListener("vms:language", language);
    return () => {
      offs.forEach((off) => off());
      window.removeEventListener("keydown", onKey);
      window.removeEventListener("vms:language", language);
    };
  }, []);

  useEffect(() => {
    if (phase !== "ready" || !user) return undefined;
    const go = () => {
      const { name, params } = parseHash();
      if (!name) {
        const first = visiblePages(user)[0];
        if (first) {
          history.replaceState(null, "", hashOf(first.name));
          setRoute(first.name);
          mountPage(user, first.name, new URLSearchParams());
        } else {
          setRoute("");
          unmountPage();
          render(html`<${Empty} icon="alert" title=${t("common.page.nothing")} />`,
            router.host.appendChild(document.createElement("div")));
        }
        return;
      }
      setRoute(name);
      mountPage(user, name, params);
    };
    window.addEventListener("hashchange", go);
    go();
    return () => window.removeEventListener("hashchange", go);
  }, [phase, user]);

  const logout = async () => {
    setPhase("boot"); // the chrome goes first: nothing renders for a user that is gone
    router.user = null;
    await session.logout();
    setUser(null);
    await toLogin();
  };

  let body;
  if (phase === "boot") {
    body = html`<div class="boot"><${Spinner} /></div>`;
  } else if (phase === "failed") {
    body = html`<div class="boot"><${ErrorBox} title=${t("common.error.start")}
      error=${bootError} onRetry=${start} /></div>`;
  } else if (phase === "login") {
    body = html`<${LoginScreen} setupNeeded=${setupNeeded} onDone=${enter} notice=${notice} />`;
  } else {
    body = html`<div class="app">
      <${TopBar} user=${user} route=${route} onLogout=${logout} onHelp=${() => setHelp(true)} />
      <${PageHost} />
    </div>`;
  }
  return html`${body}
    ${help ? html`<${ShortcutHelp} onClose=${() => setHelp(false)} />` : null}
    <${Toasts} />`;
}

// --- start -----------------------------------------------------------------------------------

async function main() {
  const mount = document.getElementById("shell");
  try {
    await loadCatalog("common");
  } catch (e) {
    // No catalog, no words: say it in both languages, plainly.
    mount.textContent = "The application could not load (" + String(e.message || e) +
      "). Reload the page. / O aplicativo não pôde ser carregado. Recarregue a página.";
    mount.className = "fatal";
    return;
  }
  render(html`<${Shell} />`, mount);
}

main();
