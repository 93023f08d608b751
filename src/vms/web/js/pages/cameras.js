// The Cameras page: the cameras the user may see, with their health; for those who may
// manage cameras, add (tested before it is saved), edit, enable, disable and delete; the
// retention of each; and the storage roots with used, free and quota.
//
// Traps:
// - Credentials are write-only: the API never sends a password back, only has_password. On
//   edit the password field stays empty ("unchanged" in its placeholder) and is sent only when
//   typed, or as null when the user asks to remove it. The API refuses to keep a stored
//   password for a stream moved to another host (it would send it there): it then asks for it
//   again, and the field's error says so.
// - "Test connection" probes the URL as typed, with the password as typed: it cannot use a
//   stored password (the probe names no camera).
// - ?camera=<id> opens that camera (a shareable link). One the user may not view is 404 from
//   the API, exactly like an unknown one: the page says "not found" either way.
// - The list is polled (health changes); the dialog keeps its own copy of the form, so a poll
//   does not overwrite what the user is typing.

import { useEffect, useState } from "preact/hooks";
import { api } from "../api.js";
import { Button, Dialog, Empty, ErrorBox, Spinner } from "../ui.js";
import {
  Confirm,
  Field,
  Meter,
  StateBadge,
  allPages,
  bitrate,
  cameraName,
  fieldErrors,
  html,
  isNotFound,
  mountPage,
  usePoll,
} from "./admin/kit.js";

export const catalog = "cameras";
const POLL_MS = 5000;
const STORAGE_POLL_MS = 30000;
const ID_PATTERN = "[a-z0-9][a-z0-9_\\-]{0,62}";
const RECORD_MODES = ["continuous", "motion", "events", "off"];

export function render(root, ctx) {
  return mountPage(root, CamerasPage, ctx, "cameras");
}

function may(ctx, action) {
  const held = ctx.user?.permissions || [];
  return held.includes(action) || held.includes("admin");
}

export function listCameras(signal) {
  return allPages((cursor) =>
    api("/api/v1/cameras", { query: cursor ? { limit: 1000, cursor } : { limit: 1000 },
      signal }));
}

function CamerasPage({ ctx }) {
  const { t } = ctx;
  const manager = may(ctx, "manage");
  const cams = usePoll(listCameras, POLL_MS, []);
  const storage = usePoll((signal) => api("/api/v1/storage", { signal }), STORAGE_POLL_MS, []);
  const [dialog, setDialog] = useState(() => {
    const id = ctx.params.get("camera");
    return id ? { mode: "edit", id } : null;
  });
  const [confirm, setConfirm] = useState(null);
  const [toggling, setToggling] = useState({});

  const openCamera = (id) => {
    ctx.setParams({ camera: id });
    setDialog({ mode: "edit", id });
  };
  const close = (changed) => {
    ctx.setParams({}, { replace: true });
    setDialog(null);
    if (changed) cams.reload();
  };
  const toggle = async (cam) => {
    setToggling((s) => ({ ...s, [cam.id]: true }));
    try {
      const id = encodeURIComponent(cam.id);
      if (cam.enabled) {
        await api(`/api/v1/cameras/${id}/disable`, { method: "POST" });
      } else {
        await api(`/api/v1/cameras/${id}/enable`, { method: "POST" });
      }
      ctx.toast(t(cam.enabled ? "disabled_toast" : "enabled_toast",
        { name: cameraName(cam) }), "success");
    } catch (e) {
      ctx.toast(t("action_failed", { message: e.message || "" }), "error");
    } finally {
      setToggling((s) => ({ ...s, [cam.id]: false }));
      cams.reload();
    }
  };

  const items = cams.data || [];
  return html`
    <section class="adm-page cameras-page">
      <header class="adm-page-head">
        <h1>${t("title")}</h1>
        ${manager && html`
          <${Button} kind="primary" icon="cameras" data-action="add"
            onClick=${() => setDialog({ mode: "add" })}>${t("add")}<//>`}
      </header>
      ${cams.error && html`
        <${ErrorBox} title=${t("load_failed")} error=${cams.error} onRetry=${cams.reload} />`}
      ${cams.data === undefined && !cams.error && html`<${Spinner} />`}
      ${cams.data !== undefined && items.length === 0 && html`
        <${Empty} icon="cameras" title=${t("empty")}>
          ${manager ? t("empty_hint_manager") : t("empty_hint")}<//>`}
      ${items.length > 0 && html`
        <div class="table-wrap">
          <table class="table cameras-table">
            <thead><tr>
              <th scope="col">${t("name")}</th><th scope="col">${t("state")}</th>
              <th scope="col">${t("video")}</th><th scope="col">${t("recording")}</th>
              <th scope="col">${t("retention")}</th>
              <th scope="col"><span class="sr-only">${t("actions")}</span></th>
            </tr></thead>
            <tbody>
              ${items.map((cam) => html`
                <${CameraRow} key=${cam.id} cam=${cam} ctx=${ctx} manager=${manager}
                  busy=${toggling[cam.id]} onOpen=${() => openCamera(cam.id)}
                  onToggle=${() => toggle(cam)} onDelete=${() => setConfirm(cam)} />`)}
            </tbody>
          </table>
        </div>`}
      <h2 class="adm-section">${t("storage")}</h2>
      <${StorageRoots} ctx=${ctx} state=${storage} />
      ${dialog && dialog.mode === "add" && html`
        <${CameraDialog} ctx=${ctx} onClose=${close} />`}
      ${dialog && dialog.mode === "edit" && html`
        <${EditCamera} ctx=${ctx} id=${dialog.id} manager=${manager} onClose=${close} />`}
      ${confirm && html`
        <${Confirm} title=${t("delete_title")}
          message=${t("delete_message", { name: cameraName(confirm) })}
          confirmLabel=${t("delete")} cancelLabel=${t("cancel")}
          onClose=${() => setConfirm(null)}
          onConfirm=${async () => {
            await api(`/api/v1/cameras/${encodeURIComponent(confirm.id)}`,
              { method: "DELETE" });
            ctx.toast(t("deleted_toast", { name: cameraName(confirm) }), "success");
            cams.reload();
          }} />`}
    </section>`;
}

function videoText(t, fmt, health) {
  if (!health.width) return t("no_video_yet");
  const fps = health.fps ? ` · ${fmt.number(Math.round(health.fps * 10) / 10)} fps` : "";
  return `${health.codec.toUpperCase()} · ${health.width}×${health.height}${fps}`;
}

function CameraRow({ cam, ctx, manager, busy, onOpen, onToggle, onDelete }) {
  const { t, fmt } = ctx;
  const h = cam.health;
  return html`
    <tr data-camera=${cam.id} data-state=${h.state}>
      <td data-label=${t("name")}>
        <button type="button" class="adm-linklike cameras-name" onClick=${onOpen}>
          ${cameraName(cam)}</button>
        <div class="adm-dim cameras-id">${cam.id}</div>
      </td>
      <td data-label=${t("state")}>
        <${StateBadge} state=${h.state} label=${t(`state_${h.state}`)} />
        <div class="adm-dim">${t("since", { time: fmt.dateTime(h.since_us) })}</div>
        ${h.last_error && h.state !== "online" && html`
          <div class="adm-error-text" title=${h.last_error}>${h.last_error}</div>`}
      </td>
      <td data-label=${t("video")}>
        <div>${videoText(t, fmt, h)}</div>
        <div class="adm-dim">${bitrate(fmt, h.bitrate_bps)}</div>
      </td>
      <td data-label=${t("recording")}>
        ${t(`record_${cam.record}`)}
        ${cam.recording && html`
          <div class="adm-dim">${fmt.bytes(cam.recording.bytes_written)}</div>`}
      </td>
      <td data-label=${t("retention")}>
        ${cam.retention_days ? t("days", { count: cam.retention_days }) : t("retention_default")}
      </td>
      <td class="adm-row-actions">
        ${manager && html`
          <${Button} kind="ghost" data-action="edit" onClick=${onOpen}>${t("edit")}<//>
          <${Button} kind="ghost" data-action=${cam.enabled ? "disable" : "enable"} busy=${busy}
            onClick=${onToggle}>${cam.enabled ? t("disable") : t("enable")}<//>
          <${Button} kind="danger" class="adm-quiet-danger" data-action="delete" onClick=${onDelete}>${t("delete")}<//>`}
      </td>
    </tr>`;
}

// --- the camera dialog -----------------------------------------------------------------------

/** A camera by id, then its dialog (editable for managers, read-only otherwise). */
function EditCamera({ ctx, id, manager, onClose }) {
  const { t } = ctx;
  const [state, setState] = useState({ cam: null, error: null });
  useEffect(() => {
    const controller = new AbortController();
    api(`/api/v1/cameras/${encodeURIComponent(id)}`, { signal: controller.signal })
      .then((cam) => setState({ cam, error: null }))
      .catch((error) => error?.name !== "AbortError" && setState({ cam: null, error }));
    return () => controller.abort();
  }, [id]);
  if (state.error) {
    return html`
      <${Dialog} title=${t("camera")} onClose=${() => onClose(false)}>
        ${isNotFound(state.error)
          ? html`<${ErrorBox} title=${t("not_found", { id })} />`
          : html`<${ErrorBox} title=${t("load_failed")} error=${state.error} />`}
      <//>`;
  }
  if (!state.cam) {
    return html`<${Dialog} title=${t("camera")} onClose=${() => onClose(false)}>
      <${Spinner} /><//>`;
  }
  if (!manager) return html`<${CameraInfo} ctx=${ctx} cam=${state.cam} onClose=${onClose} />`;
  return html`<${CameraDialog} ctx=${ctx} cam=${state.cam} onClose=${onClose} />`;
}

function CameraInfo({ ctx, cam, onClose }) {
  const { t, fmt } = ctx;
  const h = cam.health;
  return html`
    <${Dialog} title=${cameraName(cam)} onClose=${() => onClose(false)}>
      <dl class="adm-facts">
        <dt>${t("id")}</dt><dd>${cam.id}</dd>
        <dt>${t("state")}</dt>
        <dd><${StateBadge} state=${h.state} label=${t(`state_${h.state}`)} /></dd>
        <dt>${t("video")}</dt><dd>${videoText(t, fmt, h)}</dd>
        <dt>${t("record")}</dt><dd>${t(`record_${cam.record}`)}</dd>
        <dt>${t("retention")}</dt>
        <dd>${cam.retention_days ? t("days", { count: cam.retention_days })
          : t("retention_default")}</dd>
      </dl>
    <//>`;
}

// A form field → the API's names for it in an error's details (a problem is hidden once its
// field is edited).
const FIELDS = {
  id: ["id"], name: ["name"], url: ["main.url", "main", "url"], transport: ["main.transport"],
  subUrl: ["sub.url", "sub"], subTransport: ["sub.transport"], username: ["username"],
  password: ["password"], clearPassword: ["password"], record: ["record"],
  retention: ["retention_days"], recordSub: ["record_streams"], enabled: ["enabled"],
};

function formOf(cam) {
  if (!cam) {
    return {
      id: "", name: "", url: "", transport: "tcp", subUrl: "", subTransport: "tcp",
      username: "", password: "", clearPassword: false, enabled: true, record: "continuous",
      recordSub: false, retention: "",
    };
  }
  return {
    id: cam.id,
    name: cam.name,
    url: cam.main.url,
    transport: cam.main.transport,
    subUrl: cam.sub ? cam.sub.url : "",
    subTransport: cam.sub ? cam.sub.transport : "tcp",
    username: cam.username || "",
    password: "",
    clearPassword: false,
    enabled: cam.enabled,
    record: cam.record,
    recordSub: cam.record_streams.includes("sub"),
    retention: cam.retention_days === null ? "" : String(cam.retention_days),
  };
}

function bodyOf(f, cam) {
  const body = {
    name: f.name.trim(),
    main: { url: f.url.trim(), transport: f.transport },
    sub: f.subUrl.trim() ? { url: f.subUrl.trim(), transport: f.subTransport } : null,
    username: f.username.trim() || null,
    enabled: f.enabled,
    record: f.record,
    record_streams: f.subUrl.trim() && f.recordSub ? ["main", "sub"] : ["main"],
    retention_days: f.retention === "" ? null : Number(f.retention),
  };
  if (f.password) body.password = f.password;
  else if (cam && f.clearPassword) body.password = null;
  if (!cam) body.id = f.id.trim();
  return body;
}

/** Add (no `cam`) or edit a camera; `onClose(changed)`. */
function CameraDialog({ ctx, cam = null, onClose }) {
  const { t } = ctx;
  const [f, setF] = useState(() => formOf(cam));
  const [probe, setProbe] = useState(null); // {busy} | {result} | {error}
  const [saving, setSaving] = useState(false);
  const [error, setError] = useState(null);
  const [problems, setProblems] = useState({}); // API field → problem, until edited
  const set = (k) => (e) => {
    const el = e.currentTarget;
    setF((old) => ({ ...old, [k]: el.type === "checkbox" ? el.checked : el.value }));
    const fields = FIELDS[k] || [];
    if (fields.some((name) => problems[name])) {
      setProblems((p) => Object.fromEntries(Object.entries(p)
        .filter(([name]) => !fields.includes(name))));
    }
  };
  const test = async () => {
    setProbe({ busy: true });
    const body = { url: f.url.trim(), transport: f.transport };
    if (f.username.trim()) body.username = f.username.trim();
    if (f.password) body.password = f.password;
    try {
      const result = await api("/api/v1/cameras/test", { method: "POST", body });
      setProbe({ result });
    } catch (e) {
      setProbe({ error: e });
    }
  };
  const save = async (e) => {
    e.preventDefault();
    setSaving(true);
    setError(null);
    try {
      const body = bodyOf(f, cam);
      let saved;
      if (cam) {
        saved = await api(`/api/v1/cameras/${encodeURIComponent(cam.id)}`,
          { method: "PATCH", body });
      } else {
        saved = await api("/api/v1/cameras", { method: "POST", body });
      }
      ctx.toast(t(cam ? "saved_toast" : "added_toast", { name: cameraName(saved) }), "success");
      onClose(true);
    } catch (err) {
      setError(err);
      setProblems(fieldErrors(err));
      setSaving(false);
    }
  };
  const storedPassword = cam && cam.has_password;
  const footer = html`
    <${Button} onClick=${() => onClose(false)}>${t("cancel")}<//>
    <${Button} type="submit" kind="primary" form="camera-form" busy=${saving}
      data-action="save">${cam ? t("save") : t("add_save")}<//>`;
  const general = error && Object.keys(fieldErrors(error)).length === 0;
  return html`
    <${Dialog} wide title=${cam ? t("edit_title", { name: cameraName(cam) }) : t("add_title")}
      onClose=${() => onClose(false)} footer=${footer}>
      <form id="camera-form" class="adm-form cameras-form" onSubmit=${save} novalidate>
        ${general && html`<${ErrorBox} title=${t("save_failed")} error=${error} />`}
        ${!general && Object.keys(problems).length > 0 && html`
          <p class="adm-error-text" role="alert">${t("fix_fields")}</p>`}
        <div class="adm-grid">
          ${!cam && html`
            <${Field} id="cam-id" label=${t("id")} hint=${t("id_hint")} error=${problems.id}>
              <input id="cam-id" name="id" required pattern=${ID_PATTERN} maxlength="63"
                value=${f.id} onInput=${set("id")} autocomplete="off" spellcheck="false" />
            <//>`}
          <${Field} id="cam-name" label=${t("name")} error=${problems.name}>
            <input id="cam-name" name="name" maxlength="200" value=${f.name}
              onInput=${set("name")} autocomplete="off" />
          <//>
        </div>
        <fieldset class="adm-fieldset">
          <legend>${t("main_stream")}</legend>
          <div class="adm-grid adm-grid-url">
            <${Field} id="cam-url" label=${t("url")} hint=${t("url_hint")}
              error=${problems["main.url"] || problems["main"] || problems.url}>
              <input id="cam-url" name="url" type="text" inputmode="url" required
                maxlength="2048" value=${f.url} onInput=${set("url")}
                placeholder="rtsp://192.0.2.10:554/stream1" autocomplete="off"
                spellcheck="false" />
            <//>
            <${Field} id="cam-transport" label=${t("transport")}>
              <select id="cam-transport" name="transport" value=${f.transport}
                onChange=${set("transport")}>
                <option value="tcp">TCP</option><option value="udp">UDP</option>
              </select>
            <//>
          </div>
          <div class="adm-grid">
            <${Field} id="cam-user" label=${t("username")} error=${problems.username}>
              <input id="cam-user" name="username" maxlength="256" value=${f.username}
                onInput=${set("username")} autocomplete="off" spellcheck="false" />
            <//>
            <${Field} id="cam-password" label=${t("password")} error=${problems.password}
              hint=${storedPassword ? t("password_hint_stored") : t("password_hint")}>
              <input id="cam-password" name="password" type="password" maxlength="256"
                value=${f.password} onInput=${set("password")} autocomplete="new-password"
                disabled=${f.clearPassword}
                placeholder=${storedPassword ? t("password_unchanged") : ""} />
              ${storedPassword && html`
                <label class="adm-check">
                  <input type="checkbox" name="clear_password" checked=${f.clearPassword}
                    onChange=${set("clearPassword")} /> ${t("password_remove")}
                </label>`}
            <//>
          </div>
          <div class="cameras-probe">
            <${Button} icon="check" data-action="test" busy=${probe?.busy}
              disabled=${!f.url.trim()} onClick=${test}>${t("test")}<//>
            <${ProbeResult} t=${t} fmt=${ctx.fmt} probe=${probe} />
          </div>
        </fieldset>
        <details class="adm-fieldset" open=${Boolean(f.subUrl)}>
          <summary>${t("sub_stream")}</summary>
          <div class="adm-grid adm-grid-url">
            <${Field} id="cam-sub" label=${t("sub_url")} hint=${t("sub_hint")}
              error=${problems["sub.url"] || problems.sub}>
              <input id="cam-sub" name="sub_url" type="text" inputmode="url" maxlength="2048"
                value=${f.subUrl} onInput=${set("subUrl")} autocomplete="off"
                spellcheck="false" />
            <//>
            <${Field} id="cam-sub-transport" label=${t("transport")}>
              <select id="cam-sub-transport" value=${f.subTransport}
                onChange=${set("subTransport")}>
                <option value="tcp">TCP</option><option value="udp">UDP</option>
              </select>
            <//>
          </div>
        </details>
        <fieldset class="adm-fieldset">
          <legend>${t("recording")}</legend>
          <div class="adm-grid">
            <${Field} id="cam-record" label=${t("record")} error=${problems.record}>
              <select id="cam-record" name="record" value=${f.record} onChange=${set("record")}>
                ${RECORD_MODES.map((m) => html`<option value=${m}>${t(`record_${m}`)}</option>`)}
              </select>
            <//>
            <${Field} id="cam-retention" label=${t("retention_days")}
              hint=${t("retention_hint")} error=${problems.retention_days}>
              <input id="cam-retention" name="retention_days" type="number" min="0.01"
                step="any" inputmode="decimal" value=${f.retention}
                onInput=${set("retention")} />
            <//>
          </div>
          ${f.subUrl.trim() && html`
            <label class="adm-check">
              <input type="checkbox" checked=${f.recordSub} onChange=${set("recordSub")} />
              ${t("record_sub")}
            </label>`}
          <label class="adm-check">
            <input type="checkbox" name="enabled" checked=${f.enabled}
              onChange=${set("enabled")} /> ${t("enabled")}
          </label>
        </fieldset>
      </form>
    <//>`;
}

function ProbeResult({ t, fmt, probe }) {
  if (!probe || probe.busy) {
    return html`<span class="adm-dim cameras-probe-text">${probe?.busy ? t("testing")
      : t("test_hint")}</span>`;
  }
  if (probe.error) {
    return html`<div class="cameras-probe-text cameras-probe-bad" role="alert"
      data-probe="error">${probe.error.message}</div>`;
  }
  const r = probe.result;
  if (!r.ok) {
    return html`<div class="cameras-probe-text cameras-probe-bad" role="alert"
      data-probe="failed">${t("test_failed", { reason: r.error || "" })}</div>`;
  }
  const v = r.video;
  const a = r.audio;
  return html`
    <dl class="cameras-probe-text cameras-probe-ok adm-facts" data-probe="ok" role="status">
      <dt>${t("codec")}</dt><dd data-probe-field="codec">${v.codec.toUpperCase()}</dd>
      <dt>${t("resolution")}</dt>
      <dd data-probe-field="resolution">${v.width}×${v.height}</dd>
      <dt>${t("frame_rate")}</dt>
      <dd data-probe-field="fps">${v.fps ? `${fmt.number(v.fps)} fps` : t("unknown")}</dd>
      <dt>${t("audio")}</dt>
      <dd data-probe-field="audio">${a
        ? t("audio_info", { codec: a.codec.toUpperCase(), rate: a.sample_rate,
          channels: a.channels })
        : t("no_audio")}</dd>
    </dl>`;
}

// --- storage ---------------------------------------------------------------------------------

/**
 * The storage roots: state, used, free, quota. `state` is a usePoll of GET /api/v1/storage.
 * Also shown on the System page (whose catalog holds the same storage_* keys).
 */
export function StorageRoots({ ctx, state }) {
  const { t, fmt } = ctx;
  if (state.error) {
    return html`<${ErrorBox} title=${t("storage_failed")} error=${state.error}
      onRetry=${state.reload} />`;
  }
  if (!state.data) return html`<${Spinner} />`;
  const roots = state.data.roots;
  if (roots.length === 0) return html`<${Empty} title=${t("storage_none")} />`;
  return html`
    <div class="table-wrap">
      <table class="table adm-storage">
        <thead><tr>
          <th scope="col">${t("storage_root")}</th><th scope="col">${t("state")}</th>
          <th scope="col">${t("storage_used")}</th><th scope="col">${t("storage_free")}</th>
          <th scope="col">${t("storage_quota")}</th>
        </tr></thead>
        <tbody>
          ${roots.map((r) => {
            const capacity = r.max_bytes ?? (r.bytes_used ?? 0) + (r.bytes_free ?? 0);
            return html`
              <tr key=${r.name} data-root=${r.name} data-state=${r.state}>
                <td data-label=${t("storage_root")}>
                  <div>${r.name}</div><div class="adm-dim adm-path">${r.path}</div></td>
                <td data-label=${t("state")}>
                  <${StateBadge} state=${r.state} label=${t(`storage_state_${r.state}`)} />
                  ${(r.error || r.warning) && html`
                    <div class="adm-error-text">${r.error || r.warning}</div>`}
                </td>
                <td data-label=${t("storage_used")}>
                  ${r.bytes_used === null ? "—" : html`
                    <div>${fmt.bytes(r.bytes_used)}</div>
                    <${Meter} value=${r.bytes_used} max=${capacity}
                      label=${t("storage_share", { share: capacity
                        ? Math.round((100 * r.bytes_used) / capacity) : 0 })} />`}
                </td>
                <td data-label=${t("storage_free")}>
                  ${r.bytes_free === null ? "—" : fmt.bytes(r.bytes_free)}
                  ${r.min_free_bytes ? html`<div class="adm-dim">
                    ${t("storage_keep_free", { bytes: fmt.bytes(r.min_free_bytes) })}</div>`
                    : null}
                </td>
                <td data-label=${t("storage_quota")}>
                  ${r.max_bytes ? fmt.bytes(r.max_bytes) : t("storage_no_quota")}</td>
              </tr>`;
          })}
        </tbody>
      </table>
    </div>`;
}
