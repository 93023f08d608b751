// The System page: at a glance, which cameras and disks are unhealthy. Camera health (state,
// since when, last error, fps, bitrate), recording rates, the storage roots, and the server's
// own figures (version, audit head, retention): the numbers /metrics exposes, from the JSON
// routes (GET /api/v1/system, /api/v1/cameras, /api/v1/storage), polled every few seconds.
//
// Traps:
// - A recording rate is a difference: bytes written between two polls over the server's
//   clock between them (now_us of /api/v1/system), so it appears from the second poll on and a
//   camera restarted meanwhile (its counter went back) shows none until the next.
// - The camera list is the user's own (what they may view); the counts by state in the
//   summary are the server's, over every camera.
// - Unhealthy first: offline, degraded, starting, then online and disabled.

import { useRef } from "preact/hooks";
import { api } from "../api.js";
import { Empty, ErrorBox, Icon, Spinner } from "../ui.js";
import { StorageRoots, listCameras } from "./cameras.js";
import { StateBadge, bitrate, cameraName, html, mountPage, usePoll } from "./admin/kit.js";

export const catalog = "system";
const POLL_MS = 5000;
const ORDER = { offline: 0, degraded: 1, starting: 2, online: 3, disabled: 4 };

export function render(root, ctx) {
  return mountPage(root, SystemPage, ctx, "system");
}

function SystemPage({ ctx }) {
  const { t } = ctx;
  const previous = useRef(null); // {now_us, bytes: {camera: bytes_written}}
  const state = usePoll(async (signal) => {
    const [info, cameras] = await Promise.all([
      api("/api/v1/system", { signal }),
      listCameras(signal),
    ]);
    const bytes = Object.fromEntries(cameras.map((c) => [c.id, c.recording?.bytes_written]));
    const rates = {};
    const before = previous.current;
    if (before && info.now_us > before.now_us) {
      const seconds = (info.now_us - before.now_us) / 1e6;
      for (const [id, now] of Object.entries(bytes)) {
        const then = before.bytes[id];
        if (now !== undefined && then !== undefined && now >= then) {
          rates[id] = ((now - then) * 8) / seconds;
        }
      }
    }
    previous.current = { now_us: info.now_us, bytes };
    return { info, cameras, rates, first: before === null };
  }, POLL_MS, []);
  const storage = usePoll((signal) => api("/api/v1/storage", { signal }), POLL_MS * 6, []);

  if (state.error && !state.data) {
    return html`<section class="adm-page system-page">
      <header class="adm-page-head"><h1>${t("title")}</h1></header>
      <${ErrorBox} title=${t("load_failed")} error=${state.error} onRetry=${state.reload} />
    </section>`;
  }
  if (!state.data) {
    return html`<section class="adm-page system-page">
      <header class="adm-page-head"><h1>${t("title")}</h1></header><${Spinner} /></section>`;
  }
  const { info, cameras, rates, first } = state.data;
  const sorted = [...cameras].sort((a, b) =>
    (ORDER[a.health.state] ?? 9) - (ORDER[b.health.state] ?? 9) || a.id.localeCompare(b.id));
  const total = Object.values(rates).reduce((s, r) => s + r, 0);
  return html`
    <section class="adm-page system-page">
      <header class="adm-page-head">
        <h1>${t("title")}</h1>
        <span class="adm-dim system-version" data-version=${info.version}>
          ${t("version", { version: info.version })}</span>
      </header>
      ${state.error && html`<${ErrorBox} title=${t("stale")} error=${state.error} />`}
      <${Summary} ctx=${ctx} info=${info} total=${first ? null : total} />
      <h2 class="adm-section">${t("camera_health")}</h2>
      ${sorted.length === 0 ? html`<${Empty} icon="cameras" title=${t("no_cameras")} />` : html`
        <div class="table-wrap">
          <table class="table system-health">
            <thead><tr>
              <th scope="col">${t("camera")}</th><th scope="col">${t("state")}</th>
              <th scope="col">${t("since")}</th><th scope="col">${t("last_error")}</th>
              <th scope="col" class="end">${t("fps")}</th>
              <th scope="col" class="end">${t("bitrate")}</th>
              <th scope="col" class="end">${t("recording_rate")}</th>
              <th scope="col" class="end">${t("dropped")}</th>
            </tr></thead>
            <tbody>
              ${sorted.map((c) => html`
                <${HealthRow} key=${c.id} ctx=${ctx} cam=${c} rate=${rates[c.id]}
                  first=${first} />`)}
            </tbody>
          </table>
        </div>`}
      <h2 class="adm-section">${t("storage")}</h2>
      <${StorageRoots} ctx=${ctx} state=${storage} />
    </section>`;
}

function Summary({ ctx, info, total }) {
  const { t, fmt } = ctx;
  const by = info.cameras_by_state;
  const bad = (by.offline || 0) + (by.degraded || 0);
  return html`
    <div class="system-cards">
      <div class=${`system-card ${bad ? "system-card-bad" : "system-card-ok"}`}
        data-card="cameras">
        <${Icon} name=${bad ? "alert" : "check"} size=${28} />
        <div>
          <p class="system-card-value">${t("cameras_online", {
            online: by.online || 0, total: info.cameras })}</p>
          <p class="adm-dim">${["degraded", "offline", "starting", "disabled"]
            .filter((s) => by[s]).map((s) => t(`count_${s}`, { count: by[s] })).join(" · ")
            || t("all_online")}</p>
        </div>
      </div>
      <div class="system-card" data-card="recording">
        <${Icon} name="live" size=${28} />
        <div>
          <p class="system-card-value">${total === null ? "—" : bitrate(fmt, total)}</p>
          <p class="adm-dim">${t("recording_total")}</p>
        </div>
      </div>
      <div class="system-card" data-card="audit">
        <${Icon} name="check" size=${28} />
        <div>
          <p class="system-card-value">${t("audit_head", { seq: info.audit_head_seq })}</p>
          <p class="adm-dim">${info.audit_checkpoint_seq
            ? t("audit_checkpoint", { seq: info.audit_checkpoint_seq })
            : t("audit_no_checkpoint")}</p>
        </div>
      </div>
      <div class="system-card" data-card="retention">
        <${Icon} name="exports" size=${28} />
        <div>
          <p class="system-card-value">${fmt.bytes(info.retention_deleted_bytes)}</p>
          <p class="adm-dim">${t("retention_deleted")}</p>
        </div>
      </div>
      <div class="system-card" data-card="reader">
        <${Icon} name="playback" size=${28} />
        <div>
          <p class="system-card-value">${fmt.number(
            Math.round(info.reader_longest_round_s * 1000))} ms</p>
          <p class="adm-dim">${t("reader_round")}</p>
        </div>
      </div>
    </div>`;
}

function HealthRow({ ctx, cam, rate, first }) {
  const { t, fmt } = ctx;
  const h = cam.health;
  const rec = cam.recording;
  return html`
    <tr data-camera=${cam.id} data-state=${h.state}>
      <td data-label=${t("camera")}>
        <div>${cameraName(cam)}</div>
        <div class="adm-dim">${h.width ? `${h.codec.toUpperCase()} ${h.width}×${h.height}` : ""}
        </div>
      </td>
      <td data-label=${t("state")}>
        <${StateBadge} state=${h.state} label=${t(`state_${h.state}`)} />
        ${h.warnings.length > 0 && html`
          <div class="adm-dim">${h.warnings.join("; ")}</div>`}
      </td>
      <td data-label=${t("since")}>${fmt.dateTime(h.since_us)}</td>
      <td data-label=${t("last_error")} class="system-error">
        ${h.last_error ? html`<span class="adm-error-text">${h.last_error}</span>`
          : h.previous_error ? html`<span class="adm-dim" title=${h.previous_error}>
            ${t("cleared", { time: h.error_cleared_us ? fmt.dateTime(h.error_cleared_us)
              : "" })}</span>` : "—"}
        ${h.reconnects > 0 && html`
          <div class="adm-dim">${t("reconnects", { count: h.reconnects })}</div>`}
      </td>
      <td data-label=${t("fps")} class="end">${fmt.number(Math.round(h.fps * 10) / 10)}</td>
      <td data-label=${t("bitrate")} class="end">${bitrate(fmt, h.bitrate_bps)}</td>
      <td data-label=${t("recording_rate")} class="end" data-rate=${rate ?? ""}>
        ${!rec ? t("not_recorded") : rate === undefined ? (first ? "…" : "—")
          : bitrate(fmt, rate)}
        ${rec && html`<div class="adm-dim">${fmt.bytes(rec.bytes_written)}</div>`}
      </td>
      <td data-label=${t("dropped")} class="end">${rec ? fmt.number(rec.frames_dropped) : "—"}
      </td>
    </tr>`;
}
