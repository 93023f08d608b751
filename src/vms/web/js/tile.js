// A live camera tile: one camera's picture in a box, played with the best protocol this browser
// has (WebRTC through WHEP, else MSE over a WebSocket, else LL-HLS), with what it is doing
// (connecting, live, offline since…, reconnecting), digital zoom, audio, a snapshot, and no
// stream at all while it cannot be seen.
//
//   import { LiveTile, loadPlayers } from "../tile.js";
//   html`<${LiveTile} camera=${{id, name}} ctx=${ctx} selected=${true} ... />`
//
// The players are the /live page's own (src/vms/live/static/*.js, the contract in player.js):
// classic scripts that register window.vmsPlayers[name](video, opts) -> stop; loadPlayers()
// adds their <script> tags once. llhls.js fetches hls.js itself, only when LL-HLS is played.
//
// Traps:
// - A protocol is given up for the next one only while it has never shown a frame: an error
//   before the first frame, or no frame within FALLBACK_MS. "offline" is the camera, not the
//   protocol, unless the server says the camera is online: a WHEP offer refused with 503 for
//   "too many viewers" reads as offline to the player. A protocol that failed so on one tile
//   and never worked on any is skipped by the tiles that start after it (a network that
//   blocks WebRTC should not cost every tile of a 16-tile wall its timeout).
// - A player starts asynchronously (a media token, an offer): a stop that comes meanwhile is
//   kept, and the player is stopped the moment it is returned (a generation per start).
// - Unmuting needs a gesture of the user: the audio button is one; autoplay is always muted.
// - Zoom is a CSS transform of the <video> inside a box that clips it; the snapshot is always
//   the whole frame at the camera's resolution.
// - Tiles move on the wall by CSS `order` (the page), never by moving their element: a <video>
//   taken out of the document pauses, and a WebRTC player would not start it again.

import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { html } from "./ui.js";

const PLAYER_FILES = ["abr.js", "whep.js", "mse.js", "llhls.js"];
export const PROTOCOLS = ["webrtc", "mse", "llhls"];
const FALLBACK_MS = 10000; // no first frame within this: try the next protocol
const HIDE_AFTER_MS = 1000; // out of sight this long: stop streaming (a scroll past does not)
const ZOOM_MAX = 8;

// --- shared by the Live and Playback pages -------------------------------------------------

const PAGE_LIMIT = 500;

/** Every camera the user may view (the list is paged; a site has at most a few pages). */
export async function allCameras(api, signal) {
  const out = [];
  let cursor = null;
  for (let i = 0; i < 20; i++) {
    const query = { limit: PAGE_LIMIT };
    if (cursor) query.cursor = cursor;
    const page = await api("/api/v1/cameras", { query, signal });
    out.push(...page.items);
    cursor = page.next;
    if (!cursor) break;
  }
  return out;
}

/** Links the page's stylesheet once (the shell links only its own). */
export function stylesheet(name) {
  if (document.querySelector(`link[data-page-css="${name}"]`)) return;
  const css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = `/ui/css/${name}.css`;
  css.dataset.pageCss = name;
  document.head.append(css);
}

// --- the players ----------------------------------------------------------------------------

let loading = null;

function script(src) {
  return new Promise((resolve) => {
    const s = document.createElement("script");
    s.src = src;
    s.async = false; // in order: abr.js first, which mse.js and whep.js read
    s.onload = s.onerror = () => resolve(); // a protocol whose file is missing is not offered
    document.head.append(s);
  });
}

/** Loads the /live page's players once; resolves to window.vmsPlayers. */
export function loadPlayers() {
  if (!loading) {
    loading = Promise.all(PLAYER_FILES.map((f) => script(`/live/static/${f}`)))
      .then(() => window.vmsPlayers || {});
  }
  return loading;
}

/** The protocols this browser can play, best first (forced: that one only, if it can). */
export function usableProtocols(players, forced) {
  const can = {
    webrtc: !!(players.webrtc && window.RTCPeerConnection),
    mse: !!(players.mse && window.WebSocket && (window.MediaSource || window.ManagedMediaSource)),
    llhls: !!players.llhls,
  };
  if (forced && PROTOCOLS.includes(forced)) return can[forced] ? [forced] : [];
  return PROTOCOLS.filter((p) => can[p] && !gaveUp.has(p));
}

// Protocols that failed before a first frame and have never worked in this page.
const gaveUp = new Set();
const worked = new Set();

/**
 * Plays one camera into `video`, moving to the next protocol while none has shown a frame.
 * onChange({state, detail, protocol, stream}) on every change; state is one of "starting",
 * "connecting", "live", "offline", "reconnecting", "error". online(): whether the server sees
 * the camera online (asked when a protocol says offline before its first frame).
 */
export class LiveRunner {
  constructor(video, { camera, mediaToken, protocols, players, onChange, online }) {
    Object.assign(this, { video, camera, mediaToken, protocols, players, onChange });
    this.online = online || (async () => false);
    this.index = -1;
    this.stopper = null;
    this.generation = 0;
    this.everLive = false;
    this.timer = null;
    this.status = { state: "starting", detail: "", protocol: null, stream: null };
  }

  tell(change) {
    this.status = { ...this.status, ...change };
    this.onChange(this.status);
  }

  start() {
    this.next();
  }

  async next() {
    await this.halt();
    const mine = ++this.generation;
    this.index += 1;
    this.everLive = false;
    const protocol = this.protocols[this.index];
    if (!protocol) {
      this.tell({ state: "error", detail: this.status.detail || "no protocol", protocol: null });
      return;
    }
    this.tell({ state: "connecting", protocol, stream: null });
    this.arm();
    const current = (f) => (...args) => { if (mine === this.generation) f(...args); };
    try {
      const stop = await this.players[protocol](this.video, {
        camera: this.camera,
        stream: "auto",
        base: location.origin,
        token: null,
        mediaToken: (action) => this.mediaToken(this.camera, action),
        onState: current((state, detail) => this.state(protocol, state, detail)),
        onRendition: current((stream) => this.tell({ stream })),
      });
      if (mine === this.generation) this.stopper = stop;
      else await stop();
    } catch (e) {
      if (mine === this.generation) this.state(protocol, "error", e && e.message);
    }
  }

  // Give the protocol up if it shows nothing for FALLBACK_MS (while not offline).
  arm() {
    clearTimeout(this.timer);
    if (this.everLive || this.index + 1 >= this.protocols.length) return;
    this.timer = setTimeout(() => this.giveUp(), FALLBACK_MS);
  }

  giveUp() {
    const protocol = this.protocols[this.index];
    if (!worked.has(protocol)) gaveUp.add(protocol);
    this.next();
  }

  state(protocol, state, detail = "") {
    if (state === "live") {
      this.everLive = true;
      worked.add(protocol);
      gaveUp.delete(protocol);
      clearTimeout(this.timer);
    } else if (state === "offline") {
      clearTimeout(this.timer); // the camera, not the protocol (unless the server disagrees)
      if (!this.everLive && this.index + 1 < this.protocols.length) this.doubt(protocol);
    } else if (state === "error" && !this.everLive && this.index + 1 < this.protocols.length) {
      this.tell({ detail: detail || "" });
      this.giveUp();
      return;
    } else if (!this.everLive && (state === "connecting" || state === "reconnecting")) {
      if (this.status.state === "offline") this.arm(); // back from offline: time it again
    }
    this.tell({ state, detail: detail || "" });
  }

  // Said offline before any frame: if the server sees the camera online, the protocol is the
  // trouble (refused for too many viewers, say), and the next one is tried.
  async doubt(protocol) {
    const generation = this.generation;
    let online = false;
    try {
      online = await this.online();
    } catch {
      return; // cannot tell: stay, and keep trying this protocol
    }
    if (online && generation === this.generation && this.protocols[this.index] === protocol &&
        !this.everLive && this.status.state === "offline") this.giveUp();
  }

  async halt() {
    clearTimeout(this.timer);
    this.generation += 1;
    const stop = this.stopper;
    this.stopper = null;
    if (stop) {
      try {
        await stop();
      } catch (e) {
        console.warn("live player stop failed", e);
      }
    }
  }

  /** Stops for good; the video element is left empty. */
  async stop() {
    this.index = this.protocols.length; // no next protocol after this
    await this.halt();
  }
}

// --- visibility -----------------------------------------------------------------------------

/** True while `ref`'s element is on screen and the page is visible (off after HIDE_AFTER_MS). */
export function useVisible(ref) {
  const [visible, setVisible] = useState(false);
  // Measured at once, before the first paint: an observer says so only a frame later, and on
  // a busy machine a frame is a long wait for the first picture.
  useLayoutEffect(() => {
    const r = ref.current.getBoundingClientRect();
    if (r.width && r.height && r.bottom > 0 && r.right > 0 && r.top < innerHeight &&
        r.left < innerWidth && document.visibilityState === "visible") setVisible(true);
  }, []);
  useEffect(() => {
    const el = ref.current;
    if (!el) return undefined;
    let onScreen = false;
    let timer = null;
    const update = () => {
      const now = onScreen && document.visibilityState === "visible";
      clearTimeout(timer);
      if (now) setVisible(true);
      else timer = setTimeout(() => setVisible(false), HIDE_AFTER_MS);
    };
    const io = new IntersectionObserver((entries) => {
      onScreen = entries[entries.length - 1].isIntersecting;
      update();
    });
    io.observe(el);
    document.addEventListener("visibilitychange", update);
    return () => {
      clearTimeout(timer);
      io.disconnect();
      document.removeEventListener("visibilitychange", update);
    };
  }, []);
  return visible;
}

// --- digital zoom ---------------------------------------------------------------------------

/**
 * Wheel and pinch zoom, drag to pan, on `video` inside `box` (which clips). Returns
 * {reset(), destroy(), scale()}; onChange(scale) after each change.
 */
export function attachZoom(box, video, onChange = () => {}) {
  let s = 1;
  let x = 0;
  let y = 0;
  const pointers = new Map();
  let pinch = null;

  function apply() {
    const w = box.clientWidth;
    const h = box.clientHeight;
    s = Math.min(ZOOM_MAX, Math.max(1, s));
    x = Math.min(0, Math.max(w - w * s, x)); // the picture always covers the box
    y = Math.min(0, Math.max(h - h * s, y));
    video.style.transform = s === 1 ? "" : `translate(${x}px, ${y}px) scale(${s})`;
    box.classList.toggle("zoomed", s > 1);
    onChange(s);
  }

  function zoomAt(px, py, factor) {
    const next = Math.min(ZOOM_MAX, Math.max(1, s * factor));
    x = px - ((px - x) * next) / s;
    y = py - ((py - y) * next) / s;
    s = next;
    apply();
  }

  const local = (e) => {
    const r = box.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  };

  function wheel(e) {
    e.preventDefault();
    const [px, py] = local(e);
    zoomAt(px, py, Math.exp(-e.deltaY * 0.0015));
  }

  function down(e) {
    if (e.button !== 0 || e.target.closest("button, select, a, input")) return;
    pointers.set(e.pointerId, local(e));
    if (pointers.size === 2) {
      const [a, b] = [...pointers.values()];
      pinch = { d: Math.hypot(a[0] - b[0], a[1] - b[1]), s };
    }
    if (s > 1 || pointers.size === 2) box.setPointerCapture(e.pointerId);
  }

  function move(e) {
    const last = pointers.get(e.pointerId);
    if (!last) return;
    const now = local(e);
    pointers.set(e.pointerId, now);
    if (pointers.size === 2 && pinch) {
      const [a, b] = [...pointers.values()];
      const d = Math.hypot(a[0] - b[0], a[1] - b[1]);
      zoomAt((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, (pinch.s * d) / pinch.d / s);
    } else if (s > 1) {
      x += now[0] - last[0];
      y += now[1] - last[1];
      apply();
    }
  }

  function up(e) {
    pointers.delete(e.pointerId);
    if (pointers.size < 2) pinch = null;
  }

  box.addEventListener("wheel", wheel, { passive: false });
  box.addEventListener("pointerdown", down);
  box.addEventListener("pointermove", move);
  box.addEventListener("pointerup", up);
  box.addEventListener("pointercancel", up);
  return {
    scale: () => s,
    reset() {
      s = 1;
      x = 0;
      y = 0;
      apply();
    },
    destroy() {
      box.removeEventListener("wheel", wheel);
      box.removeEventListener("pointerdown", down);
      box.removeEventListener("pointermove", move);
      box.removeEventListener("pointerup", up);
      box.removeEventListener("pointercancel", up);
    },
  };
}

// --- snapshot -------------------------------------------------------------------------------

/** A file name for a snapshot: the camera and the local time, safe on every file system. */
export function snapshotName(cameraId, date = new Date()) {
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  const stamp = `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}-` +
    `${pad(date.getHours())}${pad(date.getMinutes())}${pad(date.getSeconds())}`;
  return `${String(cameraId).replace(/[^A-Za-z0-9_-]/g, "_")}-${stamp}.png`;
}

/** The frame `video` shows, as a PNG Blob at the picture's own size (null when none yet). */
export function frameBlob(video) {
  if (!video.videoWidth || video.readyState < 2) return Promise.resolve(null);
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

/** Downloads the frame `video` shows as a PNG; false when there is no frame to take. */
export async function downloadSnapshot(video, cameraId) {
  const blob = await frameBlob(video);
  if (!blob) return false;
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = snapshotName(cameraId);
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return true;
}

// --- the tile -------------------------------------------------------------------------------

function sinceOf(detail) {
  const ms = detail ? Date.parse(detail) : NaN;
  return Number.isFinite(ms) && /\d{4}-\d\d-\d\d/.test(detail) ? ms * 1000 : null;
}

const BADGE = {
  starting: "connecting", connecting: "connecting", reconnecting: "reconnecting",
  live: "live", offline: "offline", error: "error", paused: "paused", denied: "error",
};  // prettier-ignore

/**
 * One tile of the wall. Props: camera {id, name} or null (an empty tile), known (false: an id
 * this user has no such camera, said so without saying why), cameras (for the picker), slot,
 * index (shown, 1-based), selected, enlarged, canLive, protocol (forced or null), ctx, and the
 * callbacks onPick(slot, id|null), onSwap(from, to), onEnlarge(slot), onSelect(slot),
 * onState(slot, status) (the page keeps the states: tests and shortcuts read them).
 */
export function LiveTile(props) {
  const { camera, known = true, cameras, slot, index, selected, enlarged, canLive = true,
    protocol, ctx } = props;  // prettier-ignore
  const { t, fmt } = ctx;
  const box = useRef(null);
  const video = useRef(null);
  const zoom = useRef(null);
  const runner = useRef(null);
  const visible = useVisible(box);
  const [status, setStatus] = useState({ state: "starting", detail: "", protocol: null });
  const [since, setSince] = useState(null);
  const [muted, setMuted] = useState(true);
  const [zoomed, setZoomed] = useState(1);
  const [over, setOver] = useState(false);
  const id = camera && known ? camera.id : null;
  const active = !!id && canLive && visible;

  useEffect(() => {
    zoom.current = attachZoom(box.current, video.current, setZoomed);
    return () => zoom.current.destroy();
  }, []);

  // One runner per camera while the tile is seen; none otherwise.
  useEffect(() => {
    if (!active) {
      setStatus({ state: id && !canLive ? "denied" : "paused", detail: "", protocol: null });
      return undefined;
    }
    let alive = true;
    const report = (s) => {
      if (!alive) return;
      setStatus(s);
      props.onState?.(slot, s);
    };
    loadPlayers().then((players) => {
      if (!alive) return;
      const protocols = usableProtocols(players, protocol);
      if (!protocols.length) {
        report({ state: "error", detail: t("live.tile.no_protocol"), protocol: null });
        return;
      }
      const online = () => ctx.api(`/api/v1/cameras/${encodeURIComponent(id)}`)
        .then((c) => !!c.health && ["online", "degraded"].includes(c.health.state));
      runner.current = new LiveRunner(video.current, {
        camera: id, mediaToken: ctx.mediaToken, protocols, players, onChange: report, online,
      });
      runner.current.start();
    });
    return () => {
      alive = false;
      const r = runner.current;
      runner.current = null;
      if (r) r.stop();
      props.onState?.(slot, { state: "paused", detail: "", protocol: null });
    };
  }, [id, active, protocol]);

  // Offline without a time from the player (a WHEP offer refused with 503): the camera's own.
  useEffect(() => {
    setSince(null);
    if (status.state !== "offline") return undefined;
    const fromPlayer = sinceOf(status.detail);
    if (fromPlayer) {
      setSince(fromPlayer);
      return undefined;
    }
    const abort = new AbortController();
    ctx.api(`/api/v1/cameras/${encodeURIComponent(id)}`, { signal: abort.signal })
      .then((c) => setSince(c.health && c.health.state === "offline" ? c.health.since_us : null))
      .catch(() => {});
    return () => abort.abort();
  }, [status.state, status.detail, id]);

  useEffect(() => {
    if (video.current) video.current.muted = muted;
  }, [muted]);

  const label = () => {
    const s = status.state;
    if (!camera) return "";
    if (!known) return t("live.tile.unavailable");
    if (s === "offline") {
      return since ? t("live.state.offline_since", { time: fmt.dateTime(since) })
        : t("live.state.offline");
    }
    if (s === "error") return t("live.state.error", { message: status.detail || "" });
    return t(`live.state.${s === "starting" ? "connecting" : s}`);
  };

  const drag = {
    draggable: true,
    onDragStart: (e) => {
      e.dataTransfer.setData("text/x-vms-slot", String(slot));
      e.dataTransfer.effectAllowed = "move";
    },
  };
  const drop = {
    onDragOver: (e) => {
      if (![...e.dataTransfer.types].includes("text/x-vms-slot")) return;
      e.preventDefault();
      setOver(true);
    },
    onDragLeave: () => setOver(false),
    onDrop: (e) => {
      setOver(false);
      const from = Number(e.dataTransfer.getData("text/x-vms-slot"));
      if (Number.isInteger(from) && from !== slot) {
        e.preventDefault();
        props.onSwap(from, slot);
      }
    },
  };

  const snapshot = async () => {
    if (!(await downloadSnapshot(video.current, id))) ctx.toast(t("live.tile.no_frame"), "error");
  };
  const picker = html`<select class="tile-pick" aria-label=${t("live.tile.pick")}
      title=${t("live.tile.pick")} value=${camera ? camera.id : ""}
      onChange=${(e) => props.onPick(slot, e.currentTarget.value || null)}>
    <option value="">${camera ? t("live.tile.empty_option") : t("live.tile.choose")}</option>
    ${camera && !known ? html`<option value=${camera.id}>${camera.id}</option>` : null}
    ${cameras.map((c) => html`<option value=${c.id}>${c.name || c.id}</option>`)}
  </select>`;

  const classes = ["tile", `tile-${status.state}`, selected ? "selected" : "",
    enlarged ? "enlarged" : "", over ? "drop-target" : "", camera ? "" : "tile-empty"];
  return html`<div class=${classes.join(" ").trim()} ref=${box} style=${{ order: slot }}
      data-slot=${slot} data-camera=${camera ? camera.id : ""} data-state=${status.state}
      data-protocol=${status.protocol || ""} data-stream=${status.stream || ""}
      onClick=${() => props.onSelect(slot)} onDblClick=${(e) => {
        if (e.target.closest("button, select")) return;
        zoom.current.reset();
        props.onEnlarge(slot);
      }} ...${drop}>
    <video ref=${video} muted autoplay playsinline disablepictureinpicture></video>
    ${camera ? null : html`<div class="tile-empty-pick">${picker}</div>`}
    <div class="tile-bar" ...${drag}>
      <span class="tile-index" aria-hidden="true">${index}</span>
      <span class="tile-name" title=${camera ? camera.name || camera.id : ""}>
        ${camera ? (known ? camera.name || camera.id : camera.id) : t("live.tile.empty")}</span>
      ${camera ? html`<span class=${`badge badge-${BADGE[status.state] || "paused"}`}
        role="status">${label()}</span>` : null}
    </div>
    <div class="tile-tools">
      ${zoomed > 1 ? html`<button type="button" class="tile-btn" onClick=${() => zoom.current.reset()}
        title=${t("live.tile.zoom_reset")} aria-label=${t("live.tile.zoom_reset")}>
        ${`${zoomed.toFixed(1)}×`}</button>` : null}
      ${id ? html`<button type="button" class="tile-btn tile-audio"
        aria-pressed=${!muted} onClick=${() => setMuted(!muted)}
        title=${muted ? t("live.tile.unmute") : t("live.tile.mute")}
        aria-label=${muted ? t("live.tile.unmute") : t("live.tile.mute")}>
        <svg class="icon" viewBox="0 0 24 24" width="16" height="16" aria-hidden="true">
          <path d=${muted ? "M11 5L6 9H3v6h3l5 4zM23 9l-6 6M17 9l6 6"
            : "M11 5L6 9H3v6h3l5 4zM15.5 8.5a5 5 0 0 1 0 7M19 5a10 10 0 0 1 0 14"} /></svg>
        </button>` : null}
      ${id ? html`<button type="button" class="tile-btn tile-snapshot" onClick=${snapshot}
        title=${t("live.tile.snapshot")} aria-label=${t("live.tile.snapshot")}>
        <svg class="icon" viewBox="0 0 24 24" width="16" height="16" aria-hidden="true">
          <path d="M4 8h3l2-3h6l2 3h3v11H4zM12 17a4 4 0 1 0 0-8 4 4 0 0 0 0 8z" /></svg>
        </button>` : null}
      ${camera ? html`<button type="button" class="tile-btn tile-enlarge"
        onClick=${() => props.onEnlarge(slot)}
        title=${enlarged ? t("live.tile.shrink") : t("live.tile.enlarge")}
        aria-label=${enlarged ? t("live.tile.shrink") : t("live.tile.enlarge")}>
        <svg class="icon" viewBox="0 0 24 24" width="16" height="16" aria-hidden="true">
          <path d=${enlarged ? "M9 4v5H4M15 4v5h5M9 20v-5H4M15 20v-5h5"
            : "M4 9V4h5M20 9V4h-5M4 15v5h5M20 15v5h-5"} /></svg></button>` : null}
      ${camera ? picker : null}
    </div>
  </div>`;
}
