// The API client: JSON in and out, the session (access token in memory, refresh by the
// server's httpOnly cookie), media tokens.
//
// The session. Login answers an access token (minutes) and sets the refresh token as an
// httpOnly, SameSite=Strict cookie scoped to /api/v1/auth (vms.api.auth). The access token
// lives in this module's memory only; the refresh token is never read or stored by script (the
// body's copy is ignored), so a script injected into the page could use the session while the
// page is open but could not carry it away. A reload restores the session with
// POST /api/v1/auth/refresh, which the cookie authenticates (docs/design/ui.md says why not
// localStorage or sessionStorage).
//
// Traps:
// - Refresh tokens rotate, and a spent one used again revokes the whole login (theft
//   detection). Two tabs refreshing at the same moment with the same cookie would log both
//   out, so a refresh runs under a Web Lock shared by the tabs of this origin where the
//   browser has them (secure contexts: https, localhost); the tab that waits sends the cookie
//   the first one just received. Within a tab, concurrent 401s share one refresh.
// - A 401 is retried once after a refresh; a second 401, or a refresh refused, ends the
//   session: the shell is told (onSessionLost) and shows the login, keeping the URL, and the
//   caller gets an ApiError with status 401.
// - A network failure is an ApiError with status 0 and kind "network", never a bare TypeError.

const PREFIX = "/api/v1";
const EARLY_S = 15; // refresh this long before the access token expires

/** An error answer of the API: {status, kind, message, details} (vms.errors.VmsError). */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0: no answer)
   * @param {string} kind the API's error kind ("not_found", "forbidden", "network", ...)
   * @param {string} message
   * @param {Array<{field: string, problem: string}>} [details]
   */
  constructor(status, kind, message, details = []) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.kind = kind;
    this.details = details;
  }
}

const HINT = "vms.session"; // "1" while this browser holds a login: not a credential
let access = null; // {token, expiresAt (ms)}
let refreshing = null; // the refresh in flight in this tab
let lost = () => {};
const mediaTokens = new Map(); // "<camera>/<action>" → {token, expiresAt}

/** The shell's handler for a session that ended (refresh refused). */
export function onSessionLost(handler) {
  lost = handler;
}

/** The current access token (for WebSocket and WHEP URLs), or null when logged out. */
export function accessToken() {
  return access ? access.token : null;
}

/** Whether this tab holds an access token. */
export function loggedIn() {
  return access !== null;
}

function url(path, query) {
  const u = new URL(path.startsWith("/") ? path : `${PREFIX}/${path}`, location.origin);
  if (query) {
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null) continue;
      for (const one of Array.isArray(v) ? v : [v]) u.searchParams.append(k, String(one));
    }
  }
  return u.pathname + u.search;
}

async function errorOf(r) {
  let body = null;
  try {
    body = await r.json();
  } catch {
    // not JSON (a proxy's page): the status says enough
  }
  const kind = body && typeof body.error === "string" ? body.error : `http_${r.status}`;
  const message = body && typeof body.message === "string" ? body.message : r.statusText;
  return new ApiError(r.status, kind, message || `HTTP ${r.status}`, body?.details || []);
}

async function send(path, { method, query, body, signal, headers = {} }) {
  const init = { method, signal, headers: { Accept: "application/json", ...headers } };
  if (body !== undefined) {
    if (body instanceof FormData || body instanceof Blob) {
      init.body = body;
    } else {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
  }
  try {
    return await fetch(url(path, query), init);
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, "network", String(e && e.message ? e.message : e));
  }
}

function hint(on) {
  try {
    if (on) localStorage.setItem(HINT, "1");
    else localStorage.removeItem(HINT);
  } catch {
    // no storage: mayHaveSession() says yes, and a refresh finds out
  }
}

/**
 * Whether a login may be restored from the refresh cookie (which script cannot see): false
 * once this browser logged out or was refused, so the login page asks no refresh it knows
 * will fail (a 401 in the console, a round trip).
 */
export function mayHaveSession() {
  try {
    return localStorage.getItem(HINT) !== null;
  } catch {
    return true;
  }
}

function keep(tokens) {
  access = { token: tokens.access_token, expiresAt: Date.now() + tokens.expires_in * 1000 };
  mediaTokens.clear();
  hint(true);
}

async function doRefresh() {
  const r = await send("/api/v1/auth/refresh", { method: "POST" });
  if (!r.ok) {
    access = null;
    if (r.status === 401) hint(false);
    throw await errorOf(r);
  }
  keep(await r.json());
}

/**
 * A new access token from the refresh cookie. Resolves true when the session is (again)
 * valid, false when there is none; throws ApiError on a network failure.
 */
export async function refresh() {
  if (!refreshing) {
    const run = () => doRefresh();
    const locked = navigator.locks
      ? navigator.locks.request("vms-refresh", run)
      : run();
    refreshing = locked.then(
      () => true,
      (e) => {
        if (e instanceof ApiError && e.status !== 0 && e.status < 500) return false;
        throw e;
      },
    ).finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

function expired() {
  access = null;
  mediaTokens.clear();
  lost();
  return new ApiError(401, "unauthenticated", "the session has ended: log in again");
}

/**
 * Calls the API. `path`: "/api/v1/..." or relative to /api/v1 ("cameras"). JSON in and out;
 * 204 answers null. raw: the Response itself (any status but 401).
 * @returns {Promise<any>}
 */
export async function api(path, { method = "GET", query, body, signal, raw = false } = {}) {
  const stale = !access || access.expiresAt - Date.now() < EARLY_S * 1000;
  if (stale && !(await refresh())) throw expired();
  const used = access;
  const auth = () => ({ Authorization: `Bearer ${access.token}` });
  let r = await send(path, { method, query, body, signal, headers: auth() });
  if (r.status === 401) {
    // Another call may have refreshed meanwhile: then retry with its token, no refresh.
    const renewed = access !== used ? access !== null : await refresh();
    if (!renewed || !access) throw expired();
    r = await send(path, { method, query, body, signal, headers: auth() });
    if (r.status === 401) throw expired();
  }
  if (raw) return r;
  if (!r.ok) throw await errorOf(r);
  if (r.status === 204) return null;
  const type = r.headers.get("content-type") || "";
  return type.includes("json") ? r.json() : r.text();
}

/** Logs in; answers the user (UserOut). Throws ApiError (401 wrong name or password, 429). */
export async function login(name, password) {
  const r = await send("/api/v1/auth/login", { method: "POST", body: { name, password } });
  if (!r.ok) throw await errorOf(r);
  const tokens = await r.json();
  keep(tokens);
  return tokens.user;
}

/** Ends the login here and on the server (the refresh cookie's family is revoked). */
export async function logout() {
  access = null;
  mediaTokens.clear();
  hint(false);
  try {
    await send("/api/v1/auth/logout", { method: "POST" });
  } catch {
    // offline: the access token is forgotten anyway and the cookie expires on its own
  }
}

/** Whether the server has no user yet (the first administrator is made with the setup token). */
export async function setupNeeded() {
  const r = await send("/api/v1/auth/setup", { method: "GET" });
  if (!r.ok) throw await errorOf(r);
  return Boolean((await r.json()).needed);
}

/** Makes the first administrator with the one-time setup token the server printed. */
export async function setup(token, name, password) {
  const r = await send("/api/v1/auth/setup", {
    method: "POST", body: { token, name, password },
  });
  if (!r.ok) throw await errorOf(r);
  return r.json();
}

/**
 * A media token for one camera and action (for URLs players fetch without headers); cached
 * until shortly before it expires.
 * @param {string} cameraId
 * @param {"live"|"playback"|"export"|"view"} action
 * @returns {Promise<string>}
 */
export async function mediaToken(cameraId, action) {
  const key = `${cameraId}/${action}`;
  const hit = mediaTokens.get(key);
  if (hit && hit.expiresAt > Date.now()) return hit.token;
  const out = await api("/api/v1/auth/media-token", {
    method: "POST", body: { camera_id: cameraId, action },
  });
  // Keep it for the first 80 % of its life: a URL made from it still has time to be used.
  mediaTokens.set(key, { token: out.token, expiresAt: Date.now() + out.expires_in * 800 });
  return out.token;
}
