// The Exports page: the user's exports (an administrator's: everyone's), newest first, with
// who made them, when, which cameras and range, and their state; a running one shows its
// progress (polled each second while any runs). Download the media, its signed manifest and
// the signature; cancel a running export; delete one. Exports are started on Playback.
//
// Traps:
// - A download is a plain link to the file where it can be, so that the browser streams it to
//   disk: the user's own one-camera export, with a media token for "export" in ?token= (a link
//   sends no header). The API takes a media token from the export's maker only, and for one
//   camera: any other export (several cameras, or another user's seen by an administrator) is
//   fetched by the API client with the header and handed to the browser as a blob (held in
//   memory while it saves).
// - The manifest and its signature are files of the export like the media: ?name= picks them.
// - The list is polled fast only while a job is queued or running, then slowly.

import { useState } from "preact/hooks";
import { api, mediaToken } from "../api.js";
import { Button, Empty, ErrorBox, Spinner } from "../ui.js";
import { Confirm, allPages, cameraName, html, mountPage, StateBadge, usePoll } from
  "./admin/kit.js";

export const catalog = "exports";
const RUNNING = new Set(["queued", "running"]);
const FAST_MS = 1000;
const SLOW_MS = 5000;

export function render(root, ctx) {
  return mountPage(root, ExportsPage, ctx, "exports");
}

/** Saves a file of an export; answers when the browser has it. */
async function download(job, name, user) {
  const a = document.createElement("a");
  a.download = name;
  a.rel = "noopener";
  if (job.cameras.length === 1 && user && job.created_by === user.name) {
    const token = await mediaToken(job.cameras[0], "export");
    const url = new URL(`/api/v1/exports/${encodeURIComponent(job.id)}/file`, location.origin);
    url.searchParams.set("name", name);
    url.searchParams.set("token", token);
    a.href = url.pathname + url.search;
    document.body.append(a);
    a.click();
    a.remove();
    return;
  }
  const r = await api(`/api/v1/exports/${encodeURIComponent(job.id)}/file`,
    { query: { name }, raw: true });
  const blob = await r.blob();
  const href = URL.createObjectURL(blob);
  a.href = href;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000);
}

function ExportsPage({ ctx }) {
  const { t } = ctx;
  const [confirm, setConfirm] = useState(null); // the job to delete
  const [busy, setBusy] = useState({}); // job id → what is under way
  const [actionError, setActionError] = useState(null);
  const jobs = usePoll(
    (signal) => allPages((cursor) =>
      api("/api/v1/exports", { query: cursor ? { cursor, limit: 1000 } : { limit: 1000 },
        signal }), 5),
    (items) => (items && items.some((j) => RUNNING.has(j.state)) ? FAST_MS : SLOW_MS),
    [],
  );
  const cams = usePoll(
    (signal) => api("/api/v1/cameras", { query: { limit: 1000 }, signal }), 0, []);
  const key = usePoll(
    (signal) => api("/api/v1/exports/public-key", { signal }), 0, []);
  const names = Object.fromEntries((cams.data?.items || []).map((c) => [c.id, cameraName(c)]));

  const act = async (job, what, work) => {
    setBusy((b) => ({ ...b, [job.id]: what }));
    setActionError(null);
    try {
      await work();
    } catch (e) {
      setActionError(e);
    } finally {
      setBusy((b) => {
        const n = { ...b };
        delete n[job.id];
        return n;
      });
      jobs.reload();
    }
  };
  const cancel = (job) =>
    act(job, "cancel", () => api(`/api/v1/exports/${encodeURIComponent(job.id)}/cancel`,
      { method: "POST" }));
  const save = (job, name) => act(job, name, () => download(job, name, ctx.user));
  const savePem = () => {
    const blob = new Blob([key.data.pem], { type: "application/x-pem-file" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `vms-export-key-${key.data.key_id.slice(0, 12)}.pem`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
  };

  const items = jobs.data || [];
  return html`
    <section class="adm-page exports-page">
      <header class="adm-page-head">
        <h1>${t("title")}</h1>
        <${Button} onClick=${jobs.reload}>${t("refresh")}<//>
      </header>
      <p class="adm-lead">${t("lead")}</p>
      ${jobs.error && html`
        <${ErrorBox} title=${t("load_failed")} error=${jobs.error} onRetry=${jobs.reload} />`}
      ${actionError && html`<${ErrorBox} title=${t("action_failed")} error=${actionError} />`}
      ${jobs.loading && jobs.data === undefined && html`<${Spinner} />`}
      ${jobs.data !== undefined && items.length === 0 && html`
        <${Empty} icon="exports" title=${t("empty")}>${t("empty_hint")}<//>`}
      ${items.length > 0 && html`
        <div class="table-wrap">
          <table class="table exports-table">
            <thead><tr>
              <th>${t("created")}</th><th>${t("by")}</th><th>${t("cameras")}</th>
              <th>${t("range")}</th><th>${t("state")}</th><th>${t("size")}</th>
              <th><span class="adm-offscreen">${t("actions")}</span></th>
            </tr></thead>
            <tbody>
              ${items.map((job) => html`
                <${Row} key=${job.id} job=${job} ctx=${ctx} names=${names}
                  busy=${busy[job.id]} onCancel=${() => cancel(job)}
                  onDelete=${() => setConfirm(job)} onSave=${(name) => save(job, name)} />`)}
            </tbody>
          </table>
        </div>`}
      ${key.data && html`
        <p class="exports-key">
          ${t("signed_with", { key: key.data.key_id.slice(0, 16) })}
          <${Button} kind="ghost" onClick=${savePem}>${t("download_key")}<//>
        </p>`}
      ${confirm && html`
        <${Confirm} title=${t("delete_title")}
          message=${t("delete_message", { created: ctx.fmt.dateTime(confirm.created_us) })}
          confirmLabel=${t("delete")} cancelLabel=${t("cancel")}
          onClose=${() => setConfirm(null)}
          onConfirm=${async () => {
            await api(`/api/v1/exports/${encodeURIComponent(confirm.id)}`,
              { method: "DELETE" });
            jobs.reload();
          }} />`}
    </section>`;
}

function Row({ job, ctx, names, busy, onCancel, onDelete, onSave }) {
  const { t, fmt } = ctx;
  const running = RUNNING.has(job.state);
  const extra = job.files.filter((f) => f !== job.file);
  return html`
    <tr data-export=${job.id} data-state=${job.state}>
      <td data-label=${t("created")}>${fmt.dateTime(job.created_us)}</td>
      <td data-label=${t("by")}>${job.created_by}</td>
      <td data-label=${t("cameras")}>
        ${job.cameras.map((c) => html`<span class="adm-chip">${names[c] || c}</span>`)}
        ${job.stream !== "main" && html`<span class="adm-chip adm-chip-dim">${t("stream_sub")}
          </span>`}
      </td>
      <td data-label=${t("range")}>
        <span>${fmt.dateTime(job.start_us)}</span>
        <span class="adm-dim"> · ${fmt.duration((job.end_us - job.start_us) / 1e6)}</span>
      </td>
      <td data-label=${t("state")}>
        <${StateBadge} state=${job.state} label=${t(`state_${job.state}`)} />
        ${running && html`
          <progress class="exports-progress" max="100" value=${job.percent}
            aria-label=${t("progress")}>${job.percent}%</progress>
          <span class="exports-percent">${fmt.number(job.percent)} %</span>`}
        ${job.error && html`<div class="adm-error-text">${job.error}</div>`}
        ${job.notes.map((n) => html`<div class="adm-dim">${n}</div>`)}
      </td>
      <td data-label=${t("size")}>${job.state === "done" ? fmt.bytes(job.size) : ""}</td>
      <td class="adm-row-actions">
        ${job.state === "done" && job.file && html`
          <${Button} kind="primary" icon="exports" data-action="download"
            busy=${busy === job.file} onClick=${() => onSave(job.file)}>${t("download")}<//>
          ${extra.map((f) => html`
            <${Button} kind="ghost" data-action="file" data-file=${f} busy=${busy === f}
              onClick=${() => onSave(f)}>
              ${f === "manifest.json" ? t("manifest") : f.endsWith(".sig") ? t("signature") : f}
            <//>`)}`}
        ${running && html`
          <${Button} data-action="cancel" busy=${busy === "cancel"} onClick=${onCancel}>
            ${t("cancel_export")}<//>`}
        <${Button} kind="danger" class="adm-quiet-danger" data-action="delete" onClick=${onDelete}>${t("delete")}<//>
      </td>
    </tr>`;
}
