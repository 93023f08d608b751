// What the administration pages (events, exports, cameras, users, system) share: the page's
// mounting, its stylesheet, polling, dialogs, error messages and a few formatters.
//
// Traps:
// - Text comes from the page: nothing here holds an English word. Components take their
//   labels as props, already translated by the page's ctx.t.
// - Data is only ever rendered as text (htm/Preact escapes it); nothing here uses innerHTML.
// - A poll never overlaps itself, stops when the page is left (its AbortController aborts the
//   request in flight) and waits while the tab is hidden.
// - Dialogs, buttons, errors and empty states are the shell's (../../ui.js): one look.

import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { Button, Dialog, ErrorBox, html, render as mount } from "../../ui.js";

export { html };

// --- mounting --------------------------------------------------------------------------------

const sheets = new Map(); // page stylesheet name → {link, users}

/** Links css/<name>.css (next to this module's js/ folder) while some page uses it. */
export function linkStylesheet(name) {
  let entry = sheets.get(name);
  if (!entry) {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = new URL(`../../../css/${name}.css`, import.meta.url).pathname;
    document.head.append(link);
    entry = { link, users: 0 };
    sheets.set(name, entry);
  }
  entry.users += 1;
  return () => {
    entry.users -= 1;
    if (entry.users === 0) {
      entry.link.remove();
      sheets.delete(name);
    }
  };
}

/** Renders `Page` into `root` with the administration pages' stylesheet (css/admin.css) and
 * the page's own; answers the cleanup function. */
export function mountPage(root, Page, ctx, stylesheet) {
  const unlink = [linkStylesheet("admin"), linkStylesheet(stylesheet)];
  mount(html`<${Page} ctx=${ctx} />`, root);
  return () => {
    mount(null, root); // unmounts: every effect's cleanup runs (polls stop, requests abort)
    unlink.forEach((f) => f());
  };
}

// --- errors ----------------------------------------------------------------------------------

/** The status of an API error (0 for a network failure or anything else). */
export function statusOf(e) {
  return typeof e?.status === "number" ? e.status : 0;
}

/** Whether an error means "no such thing, or not yours" (the API answers both 404). */
export function isNotFound(e) {
  return statusOf(e) === 404;
}

/** Problems by field from an API error's details ({field, problem}); "main.url" stays whole. */
export function fieldErrors(e) {
  const out = {};
  for (const d of e?.details || []) {
    if (d && d.field) out[d.field] = d.problem;
  }
  return out;
}

// --- data ------------------------------------------------------------------------------------

/**
 * Calls `load(signal)` now and every `everyMs` (when given), keeping the last answer.
 * Answers {data, error, loading, reload}. `everyMs` may be a function of the data (poll
 * faster while something runs); null or 0 stops polling. `deps` restart it.
 */
export function usePoll(load, everyMs, deps) {
  const [state, setState] = useState({ data: undefined, error: null, loading: true });
  const kick = useRef(() => {});
  useEffect(() => {
    let stopped = false;
    let timer = 0;
    let controller = null;
    let last;
    const schedule = () => {
      const ms = typeof everyMs === "function" ? everyMs(last) : everyMs;
      if (!stopped && ms) timer = setTimeout(run, ms);
    };
    async function run() {
      clearTimeout(timer);
      if (stopped) return;
      if (document.hidden && last !== undefined) {
        schedule();
        return;
      }
      controller?.abort();
      controller = new AbortController();
      const mine = controller;
      try {
        const data = await load(mine.signal);
        if (stopped || mine.signal.aborted) return;
        last = data;
        setState({ data, error: null, loading: false });
      } catch (e) {
        if (stopped || mine.signal.aborted || e?.name === "AbortError") return;
        setState((s) => ({ data: s.data, error: e, loading: false }));
      }
      schedule();
    }
    kick.current = () => {
      setState((s) => ({ ...s, loading: true }));
      run();
    };
    run();
    return () => {
      stopped = true;
      clearTimeout(timer);
      controller?.abort();
    };
  }, deps);
  const reload = useCallback(() => kick.current(), []);
  return { ...state, reload };
}

/** Every page of a paged list ({items, next}): `fetchPage(cursor)` until `next` is null. */
export async function allPages(fetchPage, most = 20) {
  const items = [];
  let cursor;
  for (let i = 0; i < most; i += 1) {
    const page = await fetchPage(cursor);
    items.push(...page.items);
    if (!page.next) break;
    cursor = page.next;
  }
  return items;
}

// --- components ------------------------------------------------------------------------------

/** "Are you sure?" with a danger button; `onConfirm` may be async (the button waits, and
 * an error it throws is shown in the dialog). */
export function Confirm({ title, message, confirmLabel, cancelLabel, onConfirm, onClose }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const go = async () => {
    setBusy(true);
    setError(null);
    try {
      await onConfirm();
      onClose();
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  const footer = html`
    <${Button} onClick=${onClose}>${cancelLabel}<//>
    <${Button} kind="danger" busy=${busy} onClick=${go} data-action="confirm">
      ${confirmLabel}<//>`;
  return html`
    <${Dialog} title=${title} onClose=${onClose} footer=${footer}>
      <p class="adm-confirm-text">${message}</p>
      ${error && html`<${ErrorBox} error=${error} />`}
    <//>`;
}

/** A camera's (or anything's) state as a coloured badge; the text is the translated state. */
export function StateBadge({ state, label }) {
  return html`<span class=${`badge adm-state-${state}`} data-state=${state}>${label}</span>`;
}

/** A bar of `value` out of `max` (both numbers), with its text beside. */
export function Meter({ value, max, label }) {
  const share = max > 0 ? Math.min(1, Math.max(0, value / max)) : 0;
  const level = share > 0.9 ? "high" : share > 0.75 ? "mid" : "low";
  return html`
    <span class="adm-meter" title=${label}>
      <span class=${`adm-meter-bar adm-meter-${level}`}
        style=${`width: ${(share * 100).toFixed(1)}%`}></span>
    </span>`;
}

/** A labelled form field; `error` (a problem from the API) is shown under it. */
export function Field({ label, error, hint, children, id }) {
  return html`
    <div class=${"adm-field" + (error ? " adm-field-bad" : "")}>
      <label for=${id}>${label}</label>
      ${children}
      ${hint && !error && html`<small class="adm-hint">${hint}</small>`}
      ${error && html`<small class="adm-field-error" role="alert">${error}</small>`}
    </div>`;
}

/** Copies `text` to the clipboard (answers whether it worked): the API, else a selection. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "adm-offscreen";
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

// --- formatting ------------------------------------------------------------------------------

/** Bits per second → "1.2 Mbit/s" in the locale's digits. */
export function bitrate(fmt, bps) {
  const v = Math.max(0, Number(bps) || 0);
  if (v >= 1e6) return `${fmt.number(Math.round(v / 1e5) / 10)} Mbit/s`;
  if (v >= 1e3) return `${fmt.number(Math.round(v / 1e2) / 10)} kbit/s`;
  return `${fmt.number(Math.round(v))} bit/s`;
}

/** µs since the epoch → the value of an <input type=datetime-local> in the browser's zone. */
export function toLocalInput(us) {
  if (us === null || us === undefined || us === "") return "";
  const d = new Date(Math.floor(Number(us) / 1000));
  if (Number.isNaN(d.getTime())) return "";
  const two = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}` +
    `T${two(d.getHours())}:${two(d.getMinutes())}`;
}

/** An <input type=datetime-local> value (the browser's zone) → µs since the epoch, or null. */
export function fromLocalInput(value) {
  if (!value) return null;
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? null : ms * 1000;
}

/** A camera's display name (its id when it has none). */
export function cameraName(cam) {
  return cam?.name || cam?.id || "";
}
