// The audit tab of the Users page: whether the audit chain verifies (hashes, signed
// checkpoints), and its entries, filtered by actor, action and time.
//
// Traps:
// - The API pages forward by seq (after_seq). Unfiltered, the tab opens on the newest page
//   (after_seq = head − page) and "older" steps the window back; filtered, it starts at the
//   beginning and "newer" follows next_after_seq (a seq window would skip filtered entries).
// - Verification reads the whole log: it runs when the tab opens and on demand, not on a
//   timer.
// - Actors, targets and details are whatever was recorded (names users chose): text only.

import { useEffect, useState } from "preact/hooks";
import { api } from "../../api.js";
import { Button, Empty, ErrorBox, Icon, Spinner } from "../../ui.js";
import { fromLocalInput, html, toLocalInput, usePoll } from "./kit.js";

const PAGE = 100;

export function AuditLog({ ctx }) {
  const { t } = ctx;
  const verify = usePoll((signal) => api("/api/v1/audit/verify", { signal }), 0, []);
  const [filters, setFilters] = useState({ actor: "", action: "", since: "", until: "" });
  const [after, setAfter] = useState(undefined); // undefined: not chosen yet
  const filtered = Object.values(filters).some((v) => v !== "");
  const head = verify.data?.head_seq ?? null;

  useEffect(() => {
    if (after !== undefined) return;
    if (filtered) setAfter(null);
    else if (verify.data) setAfter(Math.max(0, (head || 0) - PAGE));
    else if (verify.error) setAfter(null);
  }, [verify.data, verify.error, filtered, after]);

  const entries = usePoll(async (signal) => {
    if (after === undefined) return undefined;
    const query = { limit: PAGE };
    if (after) query.after_seq = after;
    for (const [k, v] of Object.entries(filters)) if (v !== "") query[k] = v;
    return api("/api/v1/audit", { query, signal });
  }, 0, [after, filters]);

  const applyFilters = (f) => {
    setFilters(f);
    setAfter(Object.values(f).some((v) => v !== "") ? null : undefined);
  };
  const page = entries.data;
  return html`
    <${VerifyStatus} ctx=${ctx} state=${verify} />
    <${AuditFilters} t=${t} value=${filters} onApply=${applyFilters} />
    ${entries.error && html`<${ErrorBox} title=${t("load_failed")} error=${entries.error}
      onRetry=${entries.reload} />`}
    ${!page && !entries.error && html`<${Spinner} />`}
    ${page && page.entries.length === 0 && html`<${Empty} title=${t("audit_empty")} />`}
    ${page && page.entries.length > 0 && html`
      <div class="table-wrap">
        <table class="table users-audit">
          <thead><tr>
            <th scope="col">#</th><th scope="col">${t("audit_at")}</th>
            <th scope="col">${t("audit_actor")}</th><th scope="col">${t("audit_action")}</th>
            <th scope="col">${t("audit_target")}</th><th scope="col">${t("audit_details")}</th>
          </tr></thead>
          <tbody>
            ${page.entries.map((e) => html`
              <tr key=${e.seq} data-seq=${e.seq}>
                <td data-label="#">${e.seq}</td>
                <td data-label=${t("audit_at")}>${ctx.fmt.dateTime(e.at_us)}</td>
                <td data-label=${t("audit_actor")}>${e.actor}
                  ${e.actor_ip && html`<div class="adm-dim">${e.actor_ip}</div>`}</td>
                <td data-label=${t("audit_action")}><code>${e.action}</code></td>
                <td data-label=${t("audit_target")}>${e.target}</td>
                <td data-label=${t("audit_details")} class="users-details">
                  ${Object.keys(e.details).length ? JSON.stringify(e.details) : ""}</td>
              </tr>`)}
          </tbody>
        </table>
      </div>`}
    <footer class="adm-more">
      ${!filtered && after > 0 && html`
        <${Button} data-action="older" onClick=${() => setAfter(Math.max(0, after - PAGE))}>
          ${t("older")}<//>`}
      ${page?.next_after_seq && html`
        <${Button} data-action="newer" onClick=${() => setAfter(page.next_after_seq)}>
          ${t("newer")}<//>`}
    </footer>`;
}

function VerifyStatus({ ctx, state }) {
  const { t } = ctx;
  if (state.error) {
    return html`<${ErrorBox} title=${t("verify_failed")} error=${state.error}
      onRetry=${state.reload} />`;
  }
  const r = state.data;
  if (!r) return html`<${Spinner} label=${t("verifying")} visible />`;
  return html`
    <div class=${`users-verify users-verify-${r.ok ? "ok" : "bad"}`} data-verified=${r.ok}
      role=${r.ok ? "status" : "alert"}>
      <${Icon} name=${r.ok ? "check" : "alert"} size=${28} />
      <div>
        <p class="users-verify-title">${r.ok ? t("verify_ok") : t("verify_bad")}</p>
        <p class="adm-dim">${t("verify_summary", {
          entries: r.entries, head: r.head_seq ?? "—", checkpoints: r.checkpoints,
          checkpoint: r.checkpoint_seq ?? "—" })}</p>
        ${r.findings.length > 0 && html`
          <ul class="users-findings">
            ${r.findings.map((f) => html`
              <li><code>${f.kind}</code>${f.seq !== null ? ` #${f.seq}` : ""}: ${f.detail}</li>`)}
            ${r.findings_left_out > 0 && html`
              <li>${t("findings_more", { count: r.findings_left_out })}</li>`}
          </ul>`}
      </div>
      <${Button} kind="ghost" busy=${state.loading} onClick=${state.reload}
        data-action="verify">${t("verify_again")}<//>
    </div>`;
}

function AuditFilters({ t, value, onApply }) {
  const [f, setF] = useState(value);
  const set = (k) => (e) => setF({ ...f, [k]: e.currentTarget.value });
  const time = (k) => (e) => {
    const us = fromLocalInput(e.currentTarget.value);
    setF({ ...f, [k]: us === null ? "" : String(us) });
  };
  const submit = (e) => {
    e.preventDefault();
    onApply(f);
  };
  const clear = () => {
    const empty = { actor: "", action: "", since: "", until: "" };
    setF(empty);
    onApply(empty);
  };
  return html`
    <form class="adm-filters" onSubmit=${submit} aria-label=${t("audit_filters")}>
      <label>${t("audit_actor")}
        <input name="actor" value=${f.actor} maxlength="200" onInput=${set("actor")}
          autocomplete="off" /></label>
      <label>${t("audit_action")}
        <input name="action" value=${f.action} maxlength="64" onInput=${set("action")}
          placeholder="camera." autocomplete="off" /></label>
      <label>${t("audit_since")}
        <input name="since" type="datetime-local" value=${toLocalInput(f.since)}
          onChange=${time("since")} /></label>
      <label>${t("audit_until")}
        <input name="until" type="datetime-local" value=${toLocalInput(f.until)}
          onChange=${time("until")} /></label>
      <div class="adm-filter-buttons">
        <${Button} type="submit" kind="primary">${t("apply")}<//>
        <${Button} kind="ghost" onClick=${clear}>${t("clear")}<//>
      </div>
    </form>`;
}
