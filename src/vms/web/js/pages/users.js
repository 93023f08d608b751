// The Users page (administrators): users with their role and per-camera grants, roles, API
// keys, and the audit log with its verification. The tab is in the URL (?tab=...).
//
// Traps:
// - A new API key's secret is in the one answer that made it: the dialog shows it once, with a
//   copy button, and forgets it when closed. The list only ever has the key's prefix.
// - A grant with actions null means "whatever the role allows"; a role holding admin sees every
//   camera whatever the grants say (the dialog says so rather than hiding the grants).
// - Built-in roles (admin, operator, viewer) are fixed: only custom roles are edited.
// - Passwords typed here go to the API and nowhere else (no echo, autocomplete off).

import { useEffect, useState } from "preact/hooks";
import { api } from "../api.js";
import { Button, Dialog, Empty, ErrorBox, Spinner } from "../ui.js";
import { AuditLog } from "./admin/audit.js";
import { ActionChips, ActionPicker, ApiKeys, CAMERA_ACTIONS } from "./admin/keys.js";
import {
  Confirm,
  Field,
  StateBadge,
  allPages,
  cameraName,
  fieldErrors,
  html,
  mountPage,
  usePoll,
} from "./admin/kit.js";

export const catalog = "users";
const TABS = ["users", "roles", "keys", "audit"];

export function render(root, ctx) {
  return mountPage(root, UsersPage, ctx, "users");
}

function UsersPage({ ctx }) {
  const { t } = ctx;
  const initial = ctx.params.get("tab");
  const [tab, setTab] = useState(TABS.includes(initial) ? initial : "users");
  const choose = (name) => {
    setTab(name);
    ctx.setParams(name === "users" ? {} : { tab: name }, { replace: true });
  };
  const keydown = (e) => {
    const i = TABS.indexOf(tab);
    const next = e.key === "ArrowRight" ? i + 1 : e.key === "ArrowLeft" ? i - 1 : null;
    if (next === null) return;
    e.preventDefault();
    const name = TABS[(next + TABS.length) % TABS.length];
    choose(name);
    e.currentTarget.querySelector(`[data-tab="${name}"]`)?.focus();
  };
  return html`
    <section class="adm-page users-page">
      <header class="adm-page-head"><h1>${t("title")}</h1></header>
      <div class="adm-tabs" role="tablist" aria-label=${t("title")} onKeyDown=${keydown}>
        ${TABS.map((name) => html`
          <button type="button" role="tab" id=${`users-tab-${name}`} data-tab=${name}
            aria-selected=${tab === name ? "true" : "false"} tabindex=${tab === name ? 0 : -1}
            aria-controls="users-panel" onClick=${() => choose(name)}>${t(`tab_${name}`)}
          </button>`)}
      </div>
      <div id="users-panel" role="tabpanel" aria-labelledby=${`users-tab-${tab}`}>
        ${tab === "users" && html`<${UsersTab} ctx=${ctx} />`}
        ${tab === "roles" && html`<${RolesTab} ctx=${ctx} />`}
        ${tab === "keys" && html`<${ApiKeys} ctx=${ctx} />`}
        ${tab === "audit" && html`<${AuditLog} ctx=${ctx} />`}
      </div>
    </section>`;
}

// --- users -----------------------------------------------------------------------------------

function UsersTab({ ctx }) {
  const { t, fmt } = ctx;
  const users = usePoll((signal) => api("/api/v1/auth/users", { signal }), 0, []);
  const roles = usePoll((signal) => api("/api/v1/auth/roles", { signal }), 0, []);
  const [dialog, setDialog] = useState(null); // {kind: "add"|"edit"|"grants"|"delete", user}
  const close = (changed) => {
    setDialog(null);
    if (changed) users.reload();
  };
  if (users.error) {
    return html`<${ErrorBox} title=${t("load_failed")} error=${users.error}
      onRetry=${users.reload} />`;
  }
  if (!users.data) return html`<${Spinner} />`;
  const roleList = roles.data || [];
  return html`
    <div class="adm-toolbar">
      <${Button} kind="primary" icon="user" data-action="add-user"
        onClick=${() => setDialog({ kind: "add" })}>${t("add_user")}<//>
    </div>
    <div class="table-wrap">
      <table class="table users-table">
        <thead><tr>
          <th scope="col">${t("name")}</th><th scope="col">${t("role")}</th>
          <th scope="col">${t("state")}</th><th scope="col">${t("created")}</th>
          <th scope="col">${t("password_changed")}</th>
          <th scope="col"><span class="sr-only">${t("actions")}</span></th>
        </tr></thead>
        <tbody>
          ${users.data.map((u) => html`
            <tr key=${u.id} data-user=${u.name}>
              <td data-label=${t("name")}>${u.name}
                ${u.id === ctx.user?.id && html` <span class="adm-chip">${t("you")}</span>`}</td>
              <td data-label=${t("role")}>${u.role}</td>
              <td data-label=${t("state")}>
                <${StateBadge} state=${u.disabled ? "disabled" : "online"}
                  label=${u.disabled ? t("disabled") : t("active")} /></td>
              <td data-label=${t("created")}>${fmt.dateTime(u.created_us)}</td>
              <td data-label=${t("password_changed")}>${fmt.dateTime(u.password_changed_us)}</td>
              <td class="adm-row-actions">
                <${Button} kind="ghost" data-action="edit"
                  onClick=${() => setDialog({ kind: "edit", user: u })}>${t("edit")}<//>
                <${Button} kind="ghost" data-action="grants" icon="cameras"
                  onClick=${() => setDialog({ kind: "grants", user: u })}>${t("grants")}<//>
                <${Button} kind="danger" class="adm-quiet-danger" data-action="delete" disabled=${u.id === ctx.user?.id}
                  onClick=${() => setDialog({ kind: "delete", user: u })}>${t("delete")}<//>
              </td>
            </tr>`)}
        </tbody>
      </table>
    </div>
    ${dialog?.kind === "add" && html`
      <${UserDialog} ctx=${ctx} roles=${roleList} onClose=${close} />`}
    ${dialog?.kind === "edit" && html`
      <${UserDialog} ctx=${ctx} roles=${roleList} user=${dialog.user} onClose=${close} />`}
    ${dialog?.kind === "grants" && html`
      <${GrantsDialog} ctx=${ctx} user=${dialog.user}
        role=${roleList.find((r) => r.name === dialog.user.role)} onClose=${close} />`}
    ${dialog?.kind === "delete" && html`
      <${Confirm} title=${t("delete_user_title")}
        message=${t("delete_user_message", { name: dialog.user.name })}
        confirmLabel=${t("delete")} cancelLabel=${t("cancel")} onClose=${() => close(true)}
        onConfirm=${() => api(`/api/v1/auth/users/${dialog.user.id}`,
          { method: "DELETE" })} />`}`;
}

function UserDialog({ ctx, roles, user = null, onClose }) {
  const { t } = ctx;
  const [f, setF] = useState({
    name: user ? user.name : "",
    password: "",
    role: user ? user.role : "viewer",
    disabled: user ? user.disabled : false,
  });
  const [saving, setSaving] = useState(false);
  const [error, setError] = useState(null);
  const problems = fieldErrors(error);
  const set = (k) => (e) => {
    const el = e.currentTarget;
    setF((o) => ({ ...o, [k]: el.type === "checkbox" ? el.checked : el.value }));
  };
  const save = async (e) => {
    e.preventDefault();
    setSaving(true);
    setError(null);
    try {
      if (user) {
        const body = { role: f.role, disabled: f.disabled };
        if (f.password) body.password = f.password;
        await api(`/api/v1/auth/users/${user.id}`, { method: "PATCH", body });
        ctx.toast(t("user_saved", { name: user.name }), "success");
      } else {
        await api("/api/v1/auth/users", {
          method: "POST", body: { name: f.name.trim(), password: f.password, role: f.role },
        });
        ctx.toast(t("user_added", { name: f.name.trim() }), "success");
      }
      onClose(true);
    } catch (err) {
      setError(err);
      setSaving(false);
    }
  };
  const footer = html`
    <${Button} onClick=${() => onClose(false)}>${t("cancel")}<//>
    <${Button} type="submit" kind="primary" form="user-form" busy=${saving}
      data-action="save">${user ? t("save") : t("add_user")}<//>`;
  const names = roles.length ? roles.map((r) => r.name) : ["admin", "operator", "viewer"];
  return html`
    <${Dialog} title=${user ? t("edit_user_title", { name: user.name }) : t("add_user")}
      onClose=${() => onClose(false)} footer=${footer}>
      <form id="user-form" class="adm-form" onSubmit=${save} novalidate>
        ${error && Object.keys(problems).length === 0 && html`
          <${ErrorBox} title=${t("save_failed")} error=${error} />`}
        ${!user && html`
          <${Field} id="user-name" label=${t("name")} hint=${t("name_hint")}
            error=${problems.name}>
            <input id="user-name" name="name" required maxlength="64" value=${f.name}
              onInput=${set("name")} autocomplete="off" spellcheck="false" />
          <//>`}
        <${Field} id="user-password" label=${user ? t("new_password") : t("password")}
          hint=${user ? t("new_password_hint") : t("password_hint")} error=${problems.password}>
          <input id="user-password" name="password" type="password" maxlength="1024"
            required=${!user} value=${f.password} onInput=${set("password")}
            autocomplete="new-password" />
        <//>
        <${Field} id="user-role" label=${t("role")} error=${problems.role}>
          <select id="user-role" name="role" value=${f.role} onChange=${set("role")}>
            ${names.map((r) => html`<option value=${r}>${r}</option>`)}
          </select>
        <//>
        ${user && html`
          <label class="adm-check">
            <input type="checkbox" name="disabled" checked=${f.disabled}
              disabled=${user.id === ctx.user?.id} onChange=${set("disabled")} />
            ${t("user_disabled")}
          </label>`}
      </form>
    <//>`;
}

// --- grants ----------------------------------------------------------------------------------

function GrantsDialog({ ctx, user, role, onClose }) {
  const { t } = ctx;
  const [state, setState] = useState({ rows: null, cameras: null, error: null });
  const [saving, setSaving] = useState(false);
  const [error, setError] = useState(null);
  useEffect(() => {
    const controller = new AbortController();
    const signal = controller.signal;
    Promise.all([
      api(`/api/v1/auth/users/${user.id}/grants`, { signal }),
      allPages((cursor) => api("/api/v1/cameras", {
        query: cursor ? { limit: 1000, cursor } : { limit: 1000 }, signal })),
    ]).then(([g, cameras]) => {
      const rows = {};
      for (const one of g.grants) rows[one.camera_id] = one.actions; // null: the role's
      setState({ rows, cameras, error: null });
    }).catch((e) => e?.name !== "AbortError" && setState({ rows: null, cameras: null,
      error: e }));
    return () => controller.abort();
  }, [user.id]);
  const admin = role?.actions.includes("admin");
  const roleActions = (role?.actions || CAMERA_ACTIONS).filter((a) => CAMERA_ACTIONS.includes(a));
  const setRow = (id, value) => setState((s) => {
    const rows = { ...s.rows };
    if (value === undefined) delete rows[id];
    else rows[id] = value;
    return { ...s, rows };
  });
  const save = async () => {
    setSaving(true);
    setError(null);
    try {
      const grants = Object.entries(state.rows).map(([camera_id, actions]) => ({
        camera_id, actions,
      }));
      await api(`/api/v1/auth/users/${user.id}/grants`, { method: "PUT", body: { grants } });
      ctx.toast(t("grants_saved", { name: user.name }), "success");
      onClose(true);
    } catch (e) {
      setError(e);
      setSaving(false);
    }
  };
  const footer = html`
    <${Button} onClick=${() => onClose(false)}>${t("cancel")}<//>
    <${Button} kind="primary" busy=${saving} disabled=${!state.rows} data-action="save"
      onClick=${save}>${t("save")}<//>`;
  const rows = state.cameras
    ? [{ id: "*", label: t("every_camera") },
      ...state.cameras.map((c) => ({ id: c.id, label: cameraName(c) }))]
    : [];
  return html`
    <${Dialog} wide title=${t("grants_title", { name: user.name })}
      onClose=${() => onClose(false)} footer=${footer}>
      <p class="adm-lead">${admin ? t("grants_admin") : t("grants_lead", { role: user.role })}</p>
      ${state.error && html`<${ErrorBox} title=${t("load_failed")} error=${state.error} />`}
      ${error && html`<${ErrorBox} title=${t("save_failed")} error=${error} />`}
      ${!state.rows && !state.error && html`<${Spinner} />`}
      ${state.rows && html`
        <div class="table-wrap">
          <table class="table users-grants">
            <thead><tr>
              <th scope="col">${t("camera")}</th><th scope="col">${t("access")}</th>
            </tr></thead>
            <tbody>
              ${rows.map((row) => html`
                <${GrantRow} key=${row.id} t=${t} row=${row} value=${state.rows[row.id]}
                  roleActions=${roleActions} onChange=${(v) => setRow(row.id, v)} />`)}
            </tbody>
          </table>
        </div>`}
    <//>`;
}

function GrantRow({ t, row, value, roleActions, onChange }) {
  // value: undefined (no grant), null (the role's actions) or a list of actions.
  const mode = value === undefined ? "none" : value === null ? "role" : "some";
  const pick = (e) => {
    const m = e.currentTarget.value;
    onChange(m === "none" ? undefined : m === "role" ? null : [...roleActions]);
  };
  return html`
    <tr data-grant=${row.id}>
      <td data-label=${t("camera")}>${row.label}</td>
      <td data-label=${t("access")}>
        <select aria-label=${t("access_for", { camera: row.label })} value=${mode}
          onChange=${pick}>
          <option value="none">${t("grant_none")}</option>
          <option value="role">${t("grant_role")}</option>
          <option value="some">${t("grant_some")}</option>
        </select>
        ${mode === "some" && html`
          <${ActionPicker} t=${t} actions=${roleActions} value=${value} onChange=${onChange}
            name=${`grant-${row.id}`} />`}
      </td>
    </tr>`;
}

// --- roles -----------------------------------------------------------------------------------

function RolesTab({ ctx }) {
  const { t } = ctx;
  const roles = usePoll((signal) => api("/api/v1/auth/roles", { signal }), 0, []);
  const [dialog, setDialog] = useState(null);
  const close = (changed) => {
    setDialog(null);
    if (changed) roles.reload();
  };
  if (roles.error) {
    return html`<${ErrorBox} title=${t("load_failed")} error=${roles.error}
      onRetry=${roles.reload} />`;
  }
  if (!roles.data) return html`<${Spinner} />`;
  return html`
    <div class="adm-toolbar">
      <${Button} kind="primary" data-action="add-role"
        onClick=${() => setDialog({ kind: "edit" })}>${t("add_role")}<//>
    </div>
    ${roles.data.length === 0 && html`<${Empty} title=${t("no_roles")} />`}
    <div class="table-wrap">
      <table class="table users-roles">
        <thead><tr>
          <th scope="col">${t("role")}</th><th scope="col">${t("permissions")}</th>
          <th scope="col"><span class="sr-only">${t("actions")}</span></th>
        </tr></thead>
        <tbody>
          ${roles.data.map((r) => html`
            <tr key=${r.name} data-role=${r.name}>
              <td data-label=${t("role")}>${r.name}
                ${r.builtin && html` <span class="adm-chip adm-chip-dim">${t("builtin")}</span>`}
              </td>
              <td data-label=${t("permissions")}><${ActionChips} t=${t} actions=${r.actions} /></td>
              <td class="adm-row-actions">
                ${!r.builtin && html`
                  <${Button} kind="ghost" data-action="edit"
                    onClick=${() => setDialog({ kind: "edit", role: r })}>${t("edit")}<//>
                  <${Button} kind="danger" class="adm-quiet-danger" data-action="delete"
                    onClick=${() => setDialog({ kind: "delete", role: r })}>${t("delete")}<//>`}
              </td>
            </tr>`)}
        </tbody>
      </table>
    </div>
    ${dialog?.kind === "edit" && html`
      <${RoleDialog} ctx=${ctx} role=${dialog.role} onClose=${close} />`}
    ${dialog?.kind === "delete" && html`
      <${Confirm} title=${t("delete_role_title")}
        message=${t("delete_role_message", { name: dialog.role.name })}
        confirmLabel=${t("delete")} cancelLabel=${t("cancel")} onClose=${() => close(true)}
        onConfirm=${() => api(`/api/v1/auth/roles/${encodeURIComponent(dialog.role.name)}`,
          { method: "DELETE" })} />`}`;
}

function RoleDialog({ ctx, role = null, onClose }) {
  const { t } = ctx;
  const [name, setName] = useState(role ? role.name : "");
  const [actions, setActions] = useState(role ? role.actions : ["view", "live"]);
  const [saving, setSaving] = useState(false);
  const [error, setError] = useState(null);
  const save = async (e) => {
    e.preventDefault();
    setSaving(true);
    setError(null);
    try {
      await api(`/api/v1/auth/roles/${encodeURIComponent(name.trim())}`,
        { method: "PUT", body: { actions } });
      onClose(true);
    } catch (err) {
      setError(err);
      setSaving(false);
    }
  };
  const footer = html`
    <${Button} onClick=${() => onClose(false)}>${t("cancel")}<//>
    <${Button} type="submit" kind="primary" form="role-form" busy=${saving}
      disabled=${!name.trim()} data-action="save">${t("save")}<//>`;
  return html`
    <${Dialog} title=${role ? t("edit_role_title", { name: role.name }) : t("add_role")}
      onClose=${() => onClose(false)} footer=${footer}>
      <form id="role-form" class="adm-form" onSubmit=${save} novalidate>
        ${error && html`<${ErrorBox} title=${t("save_failed")} error=${error} />`}
        ${!role && html`
          <${Field} id="role-name" label=${t("role_name")} hint=${t("role_name_hint")}>
            <input id="role-name" name="name" required maxlength="64" pattern="[a-z][a-z0-9_\\-]*"
              value=${name} onInput=${(e) => setName(e.currentTarget.value)}
              autocomplete="off" spellcheck="false" />
          <//>`}
        <${ActionPicker} t=${t} value=${actions} onChange=${setActions} name="role" />
      </form>
    <//>`;
}
