// The API keys tab of the Users page: every key (an administrator sees everyone's), make one
// for a user with some actions on some cameras, revoke one. Also the action pickers the Users
// page shares.
//
// Traps:
// - The key itself is in the answer that made it, and nowhere else ever again: the dialog
//   shows it once with a copy button and a warning, and drops it when it closes. The list
//   shows the prefix only.
// - A key is made by a user logged in (a bearer token), for themselves or, as an
//   administrator, for another user (user_id).
// - Cameras: "*" (every camera) or some ids; the key never exceeds its user's own rights.

import { useState } from "preact/hooks";
import { api } from "../../api.js";
import { Button, Dialog, Empty, ErrorBox, Spinner } from "../../ui.js";
import {
  Confirm,
  Field,
  StateBadge,
  allPages,
  cameraName,
  copyText,
  fieldErrors,
  html,
  usePoll,
} from "./kit.js";

export const ACTIONS = ["view", "live", "playback", "export", "manage", "admin"];
export const CAMERA_ACTIONS = ["view", "live", "playback", "export"];

/** Checkboxes for some actions; `value` a list, `onChange(list)`. */
export function ActionPicker({ t, actions = ACTIONS, value, onChange, name }) {
  const flip = (a) => (e) => {
    const on = e.currentTarget.checked;
    onChange(on ? [...value.filter((x) => x !== a), a] : value.filter((x) => x !== a));
  };
  return html`
    <div class="users-actions" role="group" aria-label=${t("permissions")}>
      ${actions.map((a) => html`
        <label class="adm-check" title=${t(`action_${a}_help`)}>
          <input type="checkbox" name=${`${name}-${a}`} value=${a}
            checked=${value.includes(a)} onChange=${flip(a)} /> ${t(`action_${a}`)}
        </label>`)}
    </div>`;
}

export function ActionChips({ t, actions }) {
  return html`<span class="users-chips">${actions.map((a) => html`
    <span class="adm-chip">${t(`action_${a}`)}</span>`)}</span>`;
}

export function ApiKeys({ ctx }) {
  const { t, fmt } = ctx;
  const keys = usePoll((signal) => api("/api/v1/auth/api-keys", { signal }), 0, []);
  const users = usePoll((signal) => api("/api/v1/auth/users", { signal }), 0, []);
  const [dialog, setDialog] = useState(null);
  const close = (changed) => {
    setDialog(null);
    if (changed) keys.reload();
  };
  if (keys.error) {
    return html`<${ErrorBox} title=${t("load_failed")} error=${keys.error}
      onRetry=${keys.reload} />`;
  }
  if (!keys.data) return html`<${Spinner} />`;
  const names = Object.fromEntries((users.data || []).map((u) => [u.id, u.name]));
  return html`
    <div class="adm-toolbar">
      <${Button} kind="primary" data-action="add-key" onClick=${() => setDialog({ kind: "add" })}>
        ${t("add_key")}<//>
    </div>
    ${keys.data.length === 0 && html`<${Empty} title=${t("no_keys")}>${t("no_keys_hint")}<//>`}
    ${keys.data.length > 0 && html`
      <div class="table-wrap">
        <table class="table users-keys">
          <thead><tr>
            <th scope="col">${t("key_name")}</th><th scope="col">${t("key_prefix")}</th>
            <th scope="col">${t("owner")}</th><th scope="col">${t("permissions")}</th>
            <th scope="col">${t("cameras")}</th><th scope="col">${t("last_used")}</th>
            <th scope="col">${t("state")}</th>
            <th scope="col"><span class="sr-only">${t("actions")}</span></th>
          </tr></thead>
          <tbody>
            ${keys.data.map((k) => html`
              <tr key=${k.id} data-key=${k.name}>
                <td data-label=${t("key_name")}>${k.name}
                  <div class="adm-dim">${t("created_at", { time: fmt.dateTime(k.created_us) })}
                  </div></td>
                <td data-label=${t("key_prefix")}><code>${k.prefix}…</code></td>
                <td data-label=${t("owner")}>${names[k.user_id] || `#${k.user_id}`}</td>
                <td data-label=${t("permissions")}>
                  <${ActionChips} t=${t} actions=${k.actions} /></td>
                <td data-label=${t("cameras")}>
                  ${k.cameras.includes("*") ? t("every_camera") : k.cameras.join(", ")}</td>
                <td data-label=${t("last_used")}>
                  ${k.last_used_us ? fmt.dateTime(k.last_used_us) : t("never")}</td>
                <td data-label=${t("state")}>
                  <${StateBadge} state=${k.revoked ? "disabled" : "online"}
                    label=${k.revoked ? t("revoked") : t("active")} /></td>
                <td class="adm-row-actions">
                  ${!k.revoked && html`
                    <${Button} kind="danger" class="adm-quiet-danger" data-action="revoke"
                      onClick=${() => setDialog({ kind: "revoke", key: k })}>${t("revoke")}<//>`}
                </td>
              </tr>`)}
          </tbody>
        </table>
      </div>`}
    ${dialog?.kind === "add" && html`
      <${KeyDialog} ctx=${ctx} users=${users.data || []} onClose=${close} />`}
    ${dialog?.kind === "revoke" && html`
      <${Confirm} title=${t("revoke_title")}
        message=${t("revoke_message", { name: dialog.key.name, prefix: dialog.key.prefix })}
        confirmLabel=${t("revoke")} cancelLabel=${t("cancel")} onClose=${() => close(true)}
        onConfirm=${() => api(`/api/v1/auth/api-keys/${dialog.key.id}`,
          { method: "DELETE" })} />`}`;
}

function KeyDialog({ ctx, users, onClose }) {
  const { t } = ctx;
  const [f, setF] = useState({
    name: "", owner: ctx.user?.id ?? "", actions: ["view", "live"], every: true, cameras: [],
  });
  const cams = usePoll((signal) => allPages((cursor) => api("/api/v1/cameras", {
    query: cursor ? { limit: 1000, cursor } : { limit: 1000 }, signal })), 0, []);
  const [saving, setSaving] = useState(false);
  const [error, setError] = useState(null);
  const [made, setMade] = useState(null); // the answer: {key, api_key}, shown once
  const [copied, setCopied] = useState(null);
  const problems = fieldErrors(error);
  const save = async (e) => {
    e.preventDefault();
    setSaving(true);
    setError(null);
    try {
      const body = {
        name: f.name.trim(),
        actions: f.actions,
        cameras: f.every ? ["*"] : f.cameras,
      };
      if (f.owner !== "" && Number(f.owner) !== ctx.user?.id) body.user_id = Number(f.owner);
      setMade(await api("/api/v1/auth/api-keys", { method: "POST", body }));
    } catch (err) {
      setError(err);
    } finally {
      setSaving(false);
    }
  };
  if (made) {
    const copy = async () => setCopied(await copyText(made.key));
    return html`
      <${Dialog} title=${t("key_made_title", { name: made.api_key.name })}
        onClose=${() => onClose(true)}
        footer=${html`<${Button} kind="primary" data-action="done" onClick=${() => onClose(true)}>
          ${t("done")}<//>`}>
        <p class="users-once" role="alert">${t("key_once")}</p>
        <div class="users-secret">
          <input class="users-secret-value" readonly value=${made.key} aria-label=${t("key")}
            onFocus=${(e) => e.currentTarget.select()} spellcheck="false" />
          <${Button} kind="primary" icon=${copied ? "check" : undefined} data-action="copy"
            onClick=${copy}>${copied ? t("copied") : t("copy")}<//>
        </div>
        ${copied === false && html`<p class="adm-error-text">${t("copy_failed")}</p>`}
      <//>`;
  }
  const footer = html`
    <${Button} onClick=${() => onClose(false)}>${t("cancel")}<//>
    <${Button} type="submit" kind="primary" form="key-form" busy=${saving}
      disabled=${!f.name.trim() || f.actions.length === 0 || (!f.every && !f.cameras.length)}
      data-action="save">${t("make_key")}<//>`;
  const pickCamera = (e) => {
    const chosen = [...e.currentTarget.selectedOptions].map((o) => o.value);
    setF((o) => ({ ...o, cameras: chosen }));
  };
  return html`
    <${Dialog} title=${t("add_key")} onClose=${() => onClose(false)} footer=${footer}>
      <form id="key-form" class="adm-form" onSubmit=${save} novalidate>
        ${error && html`<${ErrorBox} title=${t("save_failed")} error=${error} />`}
        <${Field} id="key-name" label=${t("key_name")} hint=${t("key_name_hint")}
          error=${problems.name}>
          <input id="key-name" name="name" required maxlength="64" value=${f.name}
            onInput=${(e) => setF({ ...f, name: e.currentTarget.value })} autocomplete="off" />
        <//>
        <${Field} id="key-owner" label=${t("owner")} error=${problems.user_id}>
          <select id="key-owner" name="owner" value=${String(f.owner)}
            onChange=${(e) => setF({ ...f, owner: e.currentTarget.value })}>
            ${users.map((u) => html`<option value=${String(u.id)}>${u.name}</option>`)}
          </select>
        <//>
        <fieldset class="adm-fieldset">
          <legend>${t("permissions")}</legend>
          <${ActionPicker} t=${t} value=${f.actions} name="key"
            onChange=${(actions) => setF({ ...f, actions })} />
        </fieldset>
        <fieldset class="adm-fieldset">
          <legend>${t("cameras")}</legend>
          <label class="adm-check">
            <input type="checkbox" name="every" checked=${f.every}
              onChange=${(e) => setF({ ...f, every: e.currentTarget.checked })} />
            ${t("every_camera")}
          </label>
          ${!f.every && html`
            <select multiple class="users-camera-pick" aria-label=${t("cameras")}
              onChange=${pickCamera} size="6">
              ${(cams.data || []).map((c) => html`
                <option value=${c.id} selected=${f.cameras.includes(c.id)}>
                  ${cameraName(c)}</option>`)}
            </select>
            ${problems.cameras && html`<small class="adm-field-error">${problems.cameras}</small>`}`}
        </fieldset>
      </form>
    <//>`;
}
