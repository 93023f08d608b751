// The live player page: log in, pick a camera, a stream and a protocol, and play.
//
// Each protocol is a file of its own that registers a player (PROTOCOLS below):
//   window.vmsPlayers[name] = async (video, opts) => stop      (stop: an async function)
//   opts: {camera, stream ("main" | "sub" | "auto": the player chooses), token, base,
//          mediaToken(action) -> Promise<string>   a media token for this camera,
//          onState(state, detail)   "connecting" | "live" | "offline" (detail: since, ISO) |
//                                   "reconnecting" | "error" (detail: message),
//          onLatency(seconds)       when the protocol can measure it,
//          onRendition(stream, auto)   the stream played now, when the protocol switches}
//   stop.select(stream), where the protocol has it: another stream choice, without
//   reconnecting (MSE and WebRTC; the page restarts the others).
// A player reconnects by itself until stopped. abr.js, loaded first, is the automatic choice.
//
// ?token=<access token>&camera=&stream=&protocol= skip the login form and start at once.
(() => {
  "use strict";
  const PROTOCOLS = [
    ["mse", "mse.js", "MSE (WebSocket)"],
    ["webrtc", "whep.js", "WebRTC (WHEP)"],
    ["llhls", "llhls.js", "LL-HLS"],
  ];
  const base = location.origin;
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);
  // What the page shows, also read by the tests and the latency benchmark (stream: the
  // rendition played, as the protocol says; null when it does not).
  const live = (window.vmsLive = {
    state: "idle", detail: "", latency: null, frames: 0, stream: null,
  });
  let token = params.get("token");
  let stop = null;
  let generation = 0;

  async function refresh() {
    // The refresh cookie the login set (same origin, HttpOnly): a new access token.
    const r = await fetch(`${base}/api/v1/auth/refresh`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    if (!r.ok) return false;
    token = (await r.json()).access_token;
    return true;
  }

  async function api(path, init = {}) {
    const call = () => fetch(base + path, {
      ...init, headers: { ...(init.headers || {}), Authorization: `Bearer ${token}` },
    });
    let r = await call();
    if (r.status === 401 && (await refresh())) r = await call();
    if (!r.ok) throw new Error(`${r.status}: ${(await r.json().catch(() => ({}))).message || r.statusText}`);
    return r.json();
  }

  async function mediaToken(camera, action) {
    const body = JSON.stringify({ camera_id: camera, action });
    const r = await api("/api/v1/auth/media-token", {
      method: "POST", headers: { "Content-Type": "application/json" }, body,
    });
    return r.token;
  }

  function loadScript(file) {
    return new Promise((resolve) => {
      const s = document.createElement("script");
      s.src = `/live/static/${file}`;
      s.onload = s.onerror = resolve; // a protocol whose file is missing is just not offered
      document.head.append(s);
    });
  }

  function setState(state, detail = "") {
    live.state = state;
    live.detail = detail;
    const text = state === "offline" && detail
      ? `offline since ${new Date(detail).toLocaleString()}`
      : detail ? `${state}: ${detail}` : state;
    $("state").textContent = text;
    $("state").className = state === "error" ? "error" : "";
  }

  function setLatency(seconds) {
    live.latency = seconds;
    $("latency").textContent = seconds == null ? "–" : `${(seconds * 1000).toFixed(0)} ms`;
  }

  function setRendition(stream, auto) {
    live.stream = stream;
    $("video").dataset.stream = stream || "";
    $("rendition").textContent = stream ? `${stream}${auto ? " (auto)" : ""}` : "–";
  }

  function countFrames(video) {
    if (!("requestVideoFrameCallback" in video)) return;
    const tick = () => { live.frames += 1; video.requestVideoFrameCallback(tick); };
    video.requestVideoFrameCallback(tick);
  }

  async function start() {
    const mine = ++generation;
    const old = stop;
    stop = null;
    if (old) await old();
    if (mine !== generation) return;
    const camera = $("camera").value;
    const player = (window.vmsPlayers || {})[$("protocol").value];
    if (!camera || !player) return setState("error", camera ? "no such protocol" : "no camera");
    setLatency(null);
    setRendition(null);
    const current = (f) => (...args) => { if (mine === generation) f(...args); };
    try {
      const stopper = await player($("video"), {
        camera, stream: $("stream").value, token, base,
        mediaToken: (action) => mediaToken(camera, action),
        onState: current(setState), onLatency: current(setLatency),
        onRendition: current(setRendition),
      });
      if (mine === generation) stop = stopper; else await stopper();
    } catch (e) {
      if (mine === generation) setState("error", e.message);
    }
  }

  // Another stream choice: the player switches if it can, else it starts again.
  async function changeStream() {
    if (stop && stop.select) stop.select($("stream").value);
    else await start();
  }

  async function showViewer() {
    $("login").hidden = true;
    $("viewer").hidden = false;
    await loadScript("abr.js");
    await Promise.all(PROTOCOLS.map(([, file]) => loadScript(file)));
    for (const [name, , label] of PROTOCOLS) {
      if ((window.vmsPlayers || {})[name]) $("protocol").append(new Option(label, name));
    }
    const page = await api("/api/v1/cameras?limit=500");
    for (const c of page.items) $("camera").append(new Option(c.name || c.id, c.id));
    for (const key of ["camera", "stream", "protocol"]) {
      if (params.get(key)) $(key).value = params.get(key);
      $(key).addEventListener("change", key === "stream" ? changeStream : start);
    }
    countFrames($("video"));
    await start();
  }

  $("login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const r = await fetch(`${base}/api/v1/auth/login`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: form.get("name"), password: form.get("password") }),
    });
    if (!r.ok) {
      $("login-error").textContent = (await r.json().catch(() => ({}))).message || r.statusText;
      return;
    }
    token = (await r.json()).access_token;
    showViewer().catch((e) => setState("error", e.message));
  });

  if (token) showViewer().catch((e) => setState("error", e.message));
  else $("login").hidden = false;
})();
