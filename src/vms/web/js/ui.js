// Small shared components (Preact + htm): Button, Dialog, Table, Empty, Spinner, ErrorBox,
// Icon, the toasts, and `html` (htm bound to Preact) for pages to write markup with.
//
//   import { html, render, Button, Dialog } from "../ui.js";
//   import { useState, useEffect } from "preact/hooks";
//   render(html`<${Button} kind="primary" onClick=${save}>${t("save")}<//>`, root);
//
// Text goes in as children or attributes and htm/Preact escape it: never put data through
// innerHTML (dangerouslySetInnerHTML). Styles are in css/app.css (.btn, .dialog, .table, ...).

import { h, render as preactRender } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import htm from "htm";
import { t } from "./i18n.js";

export const html = htm.bind(h);
export { h };
/** Renders a vnode into a DOM element (Preact's render); render(null, el) unmounts. */
export const render = preactRender;

// --- icons (inline SVG: no font, no request) -------------------------------------------------

const PATHS = {
  menu: "M4 6h16M4 12h16M4 18h16",
  close: "M6 6l12 12M18 6L6 18",
  sun: "M12 4V2M12 22v-2M4 12H2M22 12h-2M5.6 5.6L4.2 4.2M19.8 19.8l-1.4-1.4M5.6 18.4l-1.4 1.4M19.8 4.2l-1.4 1.4M12 17a5 5 0 1 0 0-10 5 5 0 0 0 0 10z",
  moon: "M20 14.5A8 8 0 0 1 9.5 4a8 8 0 1 0 10.5 10.5z",
  auto: "M12 3a9 9 0 1 0 0 18V3z M12 3a9 9 0 0 1 0 18",
  globe: "M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18zM3 12h18M12 3c2.5 2.5 3.8 5.5 3.8 9s-1.3 6.5-3.8 9c-2.5-2.5-3.8-5.5-3.8-9S9.5 5.5 12 3z",
  logout: "M15 4h3a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-3M10 17l5-5-5-5M15 12H4",
  keyboard: "M3 7a1 1 0 0 1 1-1h16a1 1 0 0 1 1 1v10a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1zM7 10h.01M11 10h.01M15 10h.01M8 14h8",
  alert: "M12 9v4M12 17h.01M10.3 3.9L1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z",
  user: "M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM4 21a8 8 0 0 1 16 0",
  live: "M3 7a2 2 0 0 1 2-2h10a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2zM17 10l4-2v8l-4-2",
  playback: "M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18zM12 7v5l3 2",
  events: "M6 8a6 6 0 1 1 12 0c0 7 3 9 3 9H3s3-2 3-9M10.3 21a1.9 1.9 0 0 0 3.4 0",
  exports: "M12 3v12M7 10l5 5 5-5M5 21h14",
  cameras: "M4 5h16v10H4zM8 21h8M12 15v6",
  users: "M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM2 21a7 7 0 0 1 14 0M16 3.1a4 4 0 0 1 0 7.8M22 21a7 7 0 0 0-4-6.3",
  system: "M4 6h16M4 12h16M4 18h16M8 4v4M16 10v4M10 16v4",
  fullscreen: "M4 9V4h5M20 9V4h-5M4 15v5h5M20 15v5h-5",
  check: "M5 12l5 5 9-10",
  info: "M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18zM12 11v5M12 8h.01",
};

/** An icon by name (see PATHS); decorative unless `label` is given. */
export function Icon({ name, label, size = 20 }) {
  return html`<svg class="icon" width=${size} height=${size} viewBox="0 0 24 24" fill="none"
    stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"
    aria-hidden=${label ? undefined : "true"} role=${label ? "img" : undefined}
    aria-label=${label}><path d=${PATHS[name] || PATHS.info} /></svg>`;
}

// --- Button ----------------------------------------------------------------------------------

/**
 * kind: "primary" | "secondary" (default) | "danger" | "ghost"; icon: an Icon name; busy: a
 * spinner and disabled. Other attributes go to the <button>.
 */
export function Button({ kind = "secondary", icon, busy = false, children, type = "button",
  class: extra = "", disabled, ...rest }) {
  return html`<button type=${type} class=${`btn btn-${kind} ${extra}`.trim()}
    disabled=${disabled || busy} aria-busy=${busy ? "true" : undefined} ...${rest}>
    ${busy ? html`<span class="spinner spinner-sm" aria-hidden="true"></span>`
      : icon ? html`<${Icon} name=${icon} size=${18} />` : null}
    ${children}
  </button>`;
}

// --- Dialog ----------------------------------------------------------------------------------

/**
 * A modal dialog (the browser's <dialog>: focus kept inside, Escape closes it through onClose,
 * a click on the backdrop too). Render it with open=false, or not at all, to close it.
 */
export function Dialog({ open = true, title, onClose, children, footer, wide = false }) {
  const ref = useRef(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return undefined;
    if (open && !el.open) el.showModal();
    if (!open && el.open) el.close();
    return undefined;
  }, [open]);
  const cancel = (e) => {
    e.preventDefault(); // the page decides: onClose re-renders without it
    onClose?.();
  };
  const backdrop = (e) => {
    if (e.target === ref.current) onClose?.();
  };
  return html`<dialog ref=${ref} class=${wide ? "dialog dialog-wide" : "dialog"}
      onCancel=${cancel} onClick=${backdrop} aria-labelledby="dialog-title">
    <div class="dialog-body">
      <header class="dialog-head">
        <h2 id="dialog-title">${title}</h2>
        ${onClose ? html`<button type="button" class="btn btn-ghost btn-icon" onClick=${onClose}
          aria-label=${t("common.close")} title=${t("common.close")}>
          <${Icon} name="close" /></button>` : null}
      </header>
      <div class="dialog-content">${children}</div>
      ${footer ? html`<footer class="dialog-foot">${footer}</footer>` : null}
    </div>
  </dialog>`;
}

// --- Table -----------------------------------------------------------------------------------

/**
 * columns: [{key, label, render?(row), align?: "end", class?}]; rows: objects; rowKey(row);
 * empty: what to show when there is no row; onRow(row): a click on a row.
 */
export function Table({ columns, rows, rowKey = (r) => r.id, empty, onRow, caption }) {
  if (!rows || rows.length === 0) {
    return empty ?? html`<${Empty} title=${t("common.empty")} />`;
  }
  return html`<div class="table-wrap"><table class="table">
    ${caption ? html`<caption>${caption}</caption>` : null}
    <thead><tr>${columns.map((c) => html`<th scope="col"
      class=${c.align === "end" ? "end" : ""}>${c.label}</th>`)}</tr></thead>
    <tbody>${rows.map((row) => html`<tr key=${rowKey(row)}
        class=${onRow ? "clickable" : ""} onClick=${onRow ? () => onRow(row) : undefined}>
      ${columns.map((c) => html`<td data-label=${c.label}
        class=${[c.align === "end" ? "end" : "", c.class || ""].join(" ").trim()}>
        ${c.render ? c.render(row) : String(row[c.key] ?? "")}</td>`)}
    </tr>`)}</tbody>
  </table></div>`;
}

// --- Empty, Spinner, ErrorBox ----------------------------------------------------------------

/** Nothing to show: an icon, a title and what to do about it. */
export function Empty({ icon = "info", title, children }) {
  return html`<div class="empty">
    <${Icon} name=${icon} size=${40} />
    <p class="empty-title">${title}</p>
    ${children ? html`<div class="empty-more">${children}</div>` : null}
  </div>`;
}

/** A spinner with a label for screen readers (and shown when `visible`). */
export function Spinner({ label, visible = false }) {
  return html`<div class="spinner-box" role="status">
    <span class="spinner" aria-hidden="true"></span>
    <span class=${visible ? "" : "sr-only"}>${label || t("common.loading")}</span>
  </div>`;
}

/** The message to show a user for an error: the catalog's for its kind, else its own. */
export function errorText(error) {
  if (!error) return "";
  const kind = error.kind;
  if (kind) {
    const key = `common.error.${kind}`;
    const known = t(key);
    if (known !== key) return kind === "network" || !error.message ? known
      : `${known} ${error.message}`;
  }
  return error.message || String(error);
}

/** A failure, said clearly: a title, the error's text, and a retry button when given. */
export function ErrorBox({ title, error, onRetry, children }) {
  return html`<div class="error-box" role="alert">
    <${Icon} name="alert" size=${28} />
    <div>
      <p class="error-title">${title || t("common.error.title")}</p>
      ${error ? html`<p class="error-text">${errorText(error)}</p>` : null}
      ${children}
      ${onRetry ? html`<${Button} onClick=${onRetry}>${t("common.retry")}<//>` : null}
    </div>
  </div>`;
}

// --- toasts ----------------------------------------------------------------------------------

let toasts = [];
let nextToast = 1;
const toastListeners = new Set();

function publish() {
  for (const f of toastListeners) f(toasts);
}

/**
 * Shows a short message at the bottom of the screen. kind: "info" | "success" | "error";
 * errors stay until dismissed, others go after a few seconds.
 */
export function toast(message, kind = "info") {
  const id = nextToast++;
  toasts = [...toasts, { id, message: String(message), kind }].slice(-4);
  publish();
  if (kind !== "error") setTimeout(() => dismiss(id), 5000);
  return id;
}

export function dismiss(id) {
  toasts = toasts.filter((x) => x.id !== id);
  publish();
}

/** Where the toasts show (the shell renders one). */
export function Toasts() {
  const [list, setList] = useState(toasts);
  useEffect(() => {
    toastListeners.add(setList);
    return () => toastListeners.delete(setList);
  }, []);
  return html`<div class="toasts" aria-live="polite">
    ${list.map((x) => html`<div key=${x.id} class=${`toast toast-${x.kind}`}
        role=${x.kind === "error" ? "alert" : "status"}>
      <${Icon} name=${x.kind === "error" ? "alert" : x.kind === "success" ? "check" : "info"} />
      <span>${x.message}</span>
      <button type="button" class="btn btn-ghost btn-icon" onClick=${() => dismiss(x.id)}
        aria-label=${t("common.close")}><${Icon} name="close" size=${16} /></button>
    </div>`)}
  </div>`;
}
