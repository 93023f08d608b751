// The Playback page: the cameras of a view (or chosen), a timeline row per camera
// (timeline.js: recorded runs and gaps, events, motion), every camera playing from the instant
// clicked, together (recorded.js: one clock, the others put back on it past 0.3 s), speed ½×
// to 16× (keyframes only above 4×), frame steps, go to a date and time, thumbnails on hover,
// and a range dragged on the timeline (Shift, or the range button) exported for the cameras
// chosen (POST /api/v1/exports; then the Exports page).
//
// The URL carries the moment: #/playback?cameras=a,b&t=<µs>&view=<name>&speed=2 (t may also
// be ISO 8601), so a link shows a colleague (with the rights) the same instant; play=1 starts
// playing at once. A camera the user may not play back is left out and said unavailable, with
// no word on whether it exists.
//
// Traps:
// - The timeline asks for the window shown with one bucket per 3 pixels; a window that
//   contains now is asked again every REFRESH_MS, so recording goes on growing on screen.
// - Hover thumbnails are asked only after the pointer rests (HOVER_MS), only where the
//   camera recorded, at a time rounded to the pixel: a scrub does not make a hundred requests.

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { Button, Dialog, Empty, ErrorBox, errorText, html, render as mount, Spinner } from "../ui.js";
import { allCameras, downloadSnapshot, stylesheet } from "../tile.js";
import { Timeline } from "../timeline.js";
import { RecordedPlayer, Sync } from "../recorded.js";

export const catalog = "playback";

export const SPEEDS = [0.5, 1, 2, 4, 8, 16];
const MAX_CAMERAS = 16;
const DEFAULT_SPAN_US = 1800e6;
const REFRESH_MS = 15000;
const HOVER_MS = 150;
const THUMB_WIDTH = 192;

/** An instant from the URL: µs since the epoch, or ISO 8601; null when neither. */
export function parseInstant(text) {
  if (!text) return null;
  if (/^\d{1,17}$/.test(text)) return Number(text);
  const ms = Date.parse(text);
  return Number.isFinite(ms) ? ms * 1000 : null;
}

/** The <input type=datetime-local> value of an instant, in the browser's zone. */
export function localInput(us) {
  const d = new Date(us / 1000);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:` +
    `${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function recordedAt(runs, us) {
  if (!runs) return false;
  let lo = 0;
  let hi = runs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (runs[mid][1] <= us) lo = mid + 1;
    else if (runs[mid][0] > us) hi = mid - 1;
    else return true;
  }
  return false;
}

// Transport icons (inline SVG, as the shell's: no font has them all).
const ICONS = {
  back: "M6 5v14M19 6l-9 6 9 6z", next: "M18 5v14M5 6l9 6-9 6z",
  play: "M7 5l12 7-12 7z", pause: "M8 5v14M16 5v14",
};  // prettier-ignore
const icon = (name) => html`<svg class="icon" viewBox="0 0 24 24" width="18" height="18"
  fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"
  stroke-linejoin="round" aria-hidden="true"><path d=${ICONS[name]} /></svg>`;

const columns = (n) => (n <= 1 ? 1 : n <= 4 ? 2 : n <= 9 ? 3 : 4);

function CameraPicker({ t, cameras, chosen, onDone, onClose }) {
  const [picked, setPicked] = useState(new Set(chosen));
  const flip = (id) => {
    const next = new Set(picked);
    if (next.has(id)) next.delete(id);
    else if (next.size < MAX_CAMERAS) next.add(id);
    setPicked(next);
  };
  return html`<${Dialog} title=${t("playback.cameras.title")} onClose=${onClose}
      footer=${html`<${Button} onClick=${onClose}>${t("playback.cancel")}<//>
        <${Button} kind="primary" id="pb-cameras-ok" disabled=${!picked.size}
          onClick=${() => onDone(cameras.map((c) => c.id).filter((id) => picked.has(id)))}>
          ${t("playback.cameras.show", { count: picked.size })}<//>`}>
    <p class="hint">${t("playback.cameras.hint", { max: MAX_CAMERAS })}</p>
    <ul class="pb-pick">${cameras.map((c) => html`<li><label>
      <input type="checkbox" checked=${picked.has(c.id)} value=${c.id}
        onChange=${() => flip(c.id)} /> <span>${c.name || c.id}</span></label></li>`)}</ul>
  <//>`;
}

function ExportPanel({ ctx, range, cameras, onClear }) {
  const { t, fmt, api } = ctx;
  const exportable = ctx.user?.camerasFor ? ctx.user.camerasFor("export") : "*";
  const may = cameras.filter((c) => exportable === "*" || exportable.includes(c.id));
  const [picked, setPicked] = useState(new Set(may.map((c) => c.id)));
  const [busy, setBusy] = useState(false);
  const [job, setJob] = useState(null);
  const [error, setError] = useState(null);
  const start = async () => {
    setBusy(true);
    setError(null);
    try {
      const ids = may.map((c) => c.id).filter((id) => picked.has(id));
      setJob(await api("/api/v1/exports", {
        method: "POST", body: { cameras: ids, start: range.start, end: range.end },
      }));
      ctx.toast(t("playback.export.started"), "success");
    } catch (e) {
      setError(errorText(e));
    }
    setBusy(false);
  };
  const flip = (id) => {
    const next = new Set(picked);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setPicked(next);
  };
  return html`<section class="pb-export" aria-label=${t("playback.export.title")}>
    <div class="pb-export-head">
      <strong>${t("playback.export.title")}</strong>
      <span>${t("playback.export.range", { start: fmt.dateTime(range.start),
        end: fmt.dateTime(range.end), duration: fmt.duration((range.end - range.start) / 1e6) })}</span>
    </div>
    ${may.length ? html`<div class="pb-export-cams">${may.map((c) => html`<label>
      <input type="checkbox" checked=${picked.has(c.id)} onChange=${() => flip(c.id)} />
      <span>${c.name || c.id}</span></label>`)}</div>`
      : html`<p class="hint">${t("playback.export.none")}</p>`}
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    <div class="pb-export-actions">
      ${job ? html`<span class="pb-export-done" role="status">${t("playback.export.queued")}</span>
        <${Button} kind="primary" id="pb-open-exports"
          onClick=${() => ctx.navigate("exports", { id: job.id })}>${t("playback.export.open")}<//>`
        : html`<${Button} kind="primary" id="pb-export-start" busy=${busy}
          disabled=${!picked.size} onClick=${start}>${t("playback.export.start")}<//>`}
      <${Button} kind="ghost" onClick=${onClear}>${t("playback.export.clear")}<//>
    </div>
  </section>`;
}

function Playback({ ctx }) {
  const { t, fmt, api, params } = ctx;
  const [cameras, setCameras] = useState(null); // those this user may play back
  const [failed, setFailed] = useState(null);
  const [chosen, setChosen] = useState([]);
  const [views, setViews] = useState([]);
  const [view, setView] = useState(params.get("view"));
  const [now, setNow] = useState(parseInstant(params.get("t")) ?? Date.now() * 1000 - 60e6);
  const [playing, setPlaying] = useState(false);
  const [speed, setSpeed] = useState(SPEEDS.includes(Number(params.get("speed")))
    ? Number(params.get("speed")) : 1);
  const [states, setStates] = useState({});
  const [range, setRange] = useState(null);
  const [rangeMode, setRangeMode] = useState(false);
  const [picking, setPicking] = useState(false);
  const [hover, setHover] = useState(null);
  const [dataError, setDataError] = useState(null);
  const [jump, setJump] = useState("");
  const tlHost = useRef(null);
  const tl = useRef(null);
  const sync = useRef(null);
  const players = useRef(new Map());
  const videos = useRef(new Map());
  const runs = useRef(new Map());
  const chosenRef = useRef([]);
  chosenRef.current = chosen;
  const fetching = useRef({ abort: null, timer: null });
  const hoverTimer = useRef(null);
  const lastUrl = useRef(0);
  const byId = useMemo(() => new Map((cameras || []).map((c) => [c.id, c])), [cameras]);

  // --- the data of the window shown ---------------------------------------------------------

  const fetchData = async () => {
    const ids = chosenRef.current;
    const line = tl.current;
    if (!ids.length || !line || !line.width) return;
    fetching.current.abort?.abort();
    const abort = new AbortController();
    fetching.current.abort = abort;
    const start = Math.round(line.start);
    const end = Math.round(line.end);
    const buckets = Math.max(10, Math.min(2000, Math.round(line.width / 3)));
    const signal = abort.signal;
    try {
      const r = await api("/api/v1/timeline", {
        query: { cameras: ids.join(","), start, end, buckets }, signal,
      });
      for (const c of r.cameras) {
        const list = c.runs.map((x) => [x.start_us, x.end_us]);
        runs.current.set(c.camera, list);
        line.setData(c.camera, { runs: list, moreRuns: c.more_runs, density: c.density,
          bucketUs: r.bucket_s * 1e6, start: r.start_us });  // prettier-ignore
      }
      setDataError(null);
    } catch (e) {
      if (e.name !== "AbortError" && !signal.aborted) setDataError(e);
      return;
    }
    api("/api/v1/events", { query: { camera: ids.join(","), start, end, limit: 1000 }, signal })
      .then((page) => {
        const by = new Map(ids.map((id) => [id, []]));
        for (const e of page.items) {
          by.get(e.camera)?.push({ start: e.start_us, end: e.end_us, label: e.label });
        }
        for (const [id, events] of by) line.setData(id, { events });
      }).catch(() => {}); // events are a bonus: the timeline stands without them
    for (const id of ids) {
      api(`/api/v1/cameras/${encodeURIComponent(id)}/motion`, { query: { start, end, buckets }, signal })
        .then((m) => line.setData(id, { motion: { start: m.start_us, bucketUs: m.bucket_s * 1e6,
          values: m.buckets } }))  // prettier-ignore
        .catch(() => {});
    }
  };

  const soon = () => {
    clearTimeout(fetching.current.timer);
    fetching.current.timer = setTimeout(fetchData, 200);
  };

  // --- set-up: the timeline, the clock, the cameras -----------------------------------------

  useEffect(() => {
    const line = new Timeline(tlHost.current, {
      t,
      onSeek: (us, done) => {
        sync.current.seek(us);
        if (done) ctx.setParams({ t: Math.round(us) }, { replace: true });
      },
      onWindow: soon,
      onRange: (r) => setRange(r),
      onHover: (h) => {
        clearTimeout(hoverTimer.current);
        if (!h) return setHover(null);
        setHover({ ...h, src: null });
        hoverTimer.current = setTimeout(() => showThumb(h), HOVER_MS);
        return undefined;
      },
    });
    tl.current = line;
    const clock = new Sync(() => chosenRef.current.map((id) => players.current.get(id))
      .filter(Boolean), {  // prettier-ignore
      onTime: (w, running) => {
        line.setTime(w);
        setNow(w);
        setPlaying(running);
        const span = line.end - line.start;
        if (running && w > line.end - span * 0.05) line.setWindow(w - span * 0.2, w + span * 0.8);
        if (running && performance.now() - lastUrl.current > 5000) {
          lastUrl.current = performance.now();
          ctx.setParams({ t: Math.round(w) }, { replace: true });
        }
      },
      onEdge: () => ctx.toast(t("playback.edge"), "info"),
    });
    sync.current = clock;
    clock.speed = speed;
    clock.anchor(now);
    line.setWindow(now - DEFAULT_SPAN_US * 0.7, now + DEFAULT_SPAN_US * 0.3, { tell: false });
    const refresh = setInterval(() => {
      if (line.end > Date.now() * 1000 - (line.end - line.start) * 0.1) fetchData();
    }, REFRESH_MS);
    const abort = new AbortController();
    open(abort.signal);
    return () => {
      abort.abort();
      clearInterval(refresh);
      clearTimeout(fetching.current.timer);
      fetching.current.abort?.abort();
      clearTimeout(hoverTimer.current);
      clock.destroy();
      for (const p of players.current.values()) p.destroy();
      players.current.clear();
      line.destroy();
    };
  }, []);

  const open = async (signal) => {
    setFailed(null);
    try {
      const mine = ctx.user?.camerasFor ? ctx.user.camerasFor("playback") : "*";
      const list = (await allCameras(api, signal))
        .filter((c) => mine === "*" || mine.includes(c.id));
      setCameras(list);
      api("/api/v1/views").then((p) => setViews(p.items)).catch(() => {});
      const known = new Set(list.map((c) => c.id));
      let ids = (params.get("cameras") || "").split(",").map((c) => c.trim()).filter(Boolean);
      if (!ids.length && params.get("view")) {
        try {
          const v = await api(`/api/v1/views/${encodeURIComponent(params.get("view"))}`, { signal });
          ids = v.cameras.filter(Boolean);
        } catch (e) {
          if (signal.aborted) return;
          ctx.toast(t("playback.view_failed", { message: errorText(e) }), "error");
        }
      }
      if (!ids.length) ids = list.slice(0, 4).map((c) => c.id);
      const shown = [...new Set(ids)].filter((id) => known.has(id)).slice(0, MAX_CAMERAS);
      if (shown.length < new Set(ids).size) ctx.toast(t("playback.unavailable"), "error");
      setChosen(shown);
      if (params.get("play") === "1") setTimeout(() => sync.current?.play(), 0);
    } catch (e) {
      if (!signal.aborted) setFailed(e);
    }
  };

  // Players for the cameras shown (their <video>s exist once rendered), the timeline's rows.
  useEffect(() => {
    if (!cameras) return;
    for (const [id, p] of players.current) {
      if (!chosen.includes(id)) {
        p.destroy();
        players.current.delete(id);
      }
    }
    for (const id of chosen) {
      const video = videos.current.get(id);
      if (players.current.has(id) || !video) continue;
      const cam = byId.get(id);
      const stream = cam && cam.record_streams && !cam.record_streams.includes("main") ? "sub" : "main";
      players.current.set(id, new RecordedPlayer(video, id, {
        api, mediaToken: ctx.mediaToken, stream,
        onState: (state, detail) => setStates((s) => ({ ...s, [id]: { state, detail } })),
      }));
    }
    tl.current.setRows(chosen.map((id) => ({ id, name: byId.get(id)?.name || id })));
    ctx.setParams({ cameras: chosen.join(","), t: Math.round(sync.current.now()) }, { replace: true });
    sync.current.tick();
    soon();
  }, [chosen, cameras]);

  async function showThumb(h) {
    if (!recordedAt(runs.current.get(h.id), h.us)) return;
    const line = tl.current;
    const pixel = (line.end - line.start) / Math.max(1, line.width);
    const at = Math.round(Math.round(h.us / pixel) * pixel);
    try {
      const token = await ctx.mediaToken(h.id, "playback");
      const q = new URLSearchParams({ at, width: THUMB_WIDTH, token });
      const src = `/api/v1/cameras/${encodeURIComponent(h.id)}/thumbnail.jpg?${q}`;
      setHover((cur) => (cur && cur.id === h.id && cur.us === h.us ? { ...cur, src } : cur));
    } catch {
      // no picture: the time alone
    }
  }

  // --- controls -----------------------------------------------------------------------------

  const togglePlay = () => (sync.current.running ? sync.current.pause() : sync.current.play());
  const seekBy = (s) => {
    sync.current.seek(sync.current.now() + s * 1e6);
    ctx.setParams({ t: Math.round(sync.current.now()) }, { replace: true });
  };
  const changeSpeed = (s) => {
    setSpeed(s);
    sync.current.setSpeed(s);
    ctx.setParams({ speed: s === 1 ? null : s }, { replace: true });
  };
  const goTo = (e) => {
    e.preventDefault();
    const ms = Date.parse(jump); // a datetime-local value: the browser's zone
    if (!Number.isFinite(ms)) return;
    const us = ms * 1000;
    const line = tl.current;
    const span = line.end - line.start;
    line.setWindow(us - span / 2, us + span / 2);
    sync.current.seek(us);
    setJump("");
    ctx.setParams({ t: us }, { replace: true });
  };
  const keys = useRef({});
  keys.current = { togglePlay, seekBy, range };
  useEffect(() => {
    if (!ctx.shortcut) return undefined;
    const offs = [
      ctx.shortcut("Space", () => keys.current.togglePlay(), "playback.keys.play"),
      ctx.shortcut("ArrowRight", () => (sync.current.running ? keys.current.seekBy(10)
        : sync.current.step(1)), "playback.keys.next"),  // prettier-ignore
      ctx.shortcut("ArrowLeft", () => (sync.current.running ? keys.current.seekBy(-10)
        : sync.current.step(-1)), "playback.keys.previous"),  // prettier-ignore
      ctx.shortcut("Shift+ArrowRight", () => keys.current.seekBy(60), "playback.keys.minute_on"),
      ctx.shortcut("Shift+ArrowLeft", () => keys.current.seekBy(-60), "playback.keys.minute_back"),
      ctx.shortcut("Escape", () => {
        if (!keys.current.range) return false;
        setRange(null);
        tl.current.setRange(null);
        return true;
      }, "playback.keys.clear"),
    ];
    return () => offs.forEach((off) => off());
  }, []);

  useEffect(() => tl.current?.setRangeMode(rangeMode), [rangeMode]);

  const loadView = async (name) => {
    setView(name || null);
    ctx.setParams({ view: name || null }, { replace: true });
    if (!name) return;
    try {
      const v = await api(`/api/v1/views/${encodeURIComponent(name)}`);
      const ids = [...new Set(v.cameras.filter((id) => id && byId.has(id)))];
      if (ids.length) setChosen(ids);
    } catch (e) {
      ctx.toast(t("playback.view_failed", { message: errorText(e) }), "error");
    }
  };

  // --- the page -----------------------------------------------------------------------------

  const body = () => {
    if (failed) {
      return html`<${ErrorBox} title=${t("playback.load_failed")} error=${failed}
        onRetry=${() => open(new AbortController().signal)} />`;
    }
    if (!cameras) return html`<${Spinner} label=${t("playback.loading")} />`;
    if (!cameras.length) return html`<${Empty} icon="playback" title=${t("playback.no_cameras")} />`;
    return null;
  };
  const stateLabel = (s) => {
    if (!s || s.state === "idle" || s.state === "loading") return t("playback.state.loading");
    if (s.state === "norec" || s.detail === "gap") return t("playback.state.norec");
    if (s.state === "error") return t("playback.state.error", { message: s.detail });
    return null;
  };
  const shownCams = chosen.map((id) => byId.get(id) || { id, name: id });
  const trick = speed > 4;

  // Room below the players: the timeline's rows, its help line, the export panel when shown.
  const below = 28 + Math.max(1, chosen.length) * 38 + 40 + (range ? 130 : 0);
  return html`<div class="pb" data-time=${Math.round(now)} data-playing=${playing}
      style=${{ "--tl-h": `${below}px` }}>
    <div class="pb-toolbar" role="toolbar" aria-label=${t("playback.toolbar")}>
      <${Button} id="pb-cameras" icon="cameras" onClick=${() => setPicking(true)}
        disabled=${!cameras || !cameras.length}>${t("playback.cameras.button", { count: chosen.length })}<//>
      <label class="pb-view"><span class="sr-only">${t("playback.view")}</span>
        <select value=${view || ""} onChange=${(e) => loadView(e.currentTarget.value)}>
          <option value="">${t("playback.no_view")}</option>
          ${views.map((v) => html`<option value=${v.name}>${v.name}</option>`)}
        </select></label>
      <div class="pb-transport" role="group" aria-label=${t("playback.transport")}>
        <button type="button" class="btn btn-ghost btn-icon" onClick=${() => seekBy(-10)}
          title=${t("playback.back10")} aria-label=${t("playback.back10")}>−10s</button>
        <button type="button" class="btn btn-ghost btn-icon" id="pb-step-back"
          onClick=${() => sync.current.step(-1)} title=${t("playback.frame_back")}
          aria-label=${t("playback.frame_back")}>${icon("back")}</button>
        <button type="button" class="btn btn-primary btn-icon pb-play" id="pb-play"
          onClick=${togglePlay} aria-pressed=${playing}
          title=${playing ? t("playback.pause") : t("playback.play")}
          aria-label=${playing ? t("playback.pause") : t("playback.play")}>${icon(playing ? "pause" : "play")}</button>
        <button type="button" class="btn btn-ghost btn-icon" id="pb-step"
          onClick=${() => sync.current.step(1)} title=${t("playback.frame_next")}
          aria-label=${t("playback.frame_next")}>${icon("next")}</button>
        <button type="button" class="btn btn-ghost btn-icon" onClick=${() => seekBy(10)}
          title=${t("playback.on10")} aria-label=${t("playback.on10")}>+10s</button>
        <label><span class="sr-only">${t("playback.speed")}</span>
          <select id="pb-speed" value=${String(speed)} title=${t("playback.speed")}
            onChange=${(e) => changeSpeed(Number(e.currentTarget.value))}>
            ${SPEEDS.map((s) => html`<option value=${String(s)}>${s === 0.5 ? "½" : s}×</option>`)}
          </select></label>
        ${trick ? html`<small class="pb-trick" id="pb-trick">${t("playback.keyframes")}</small>` : null}
      </div>
      <form class="pb-goto" onSubmit=${goTo}>
        <label><span class="sr-only">${t("playback.goto")}</span>
          <input type="datetime-local" step="1" id="pb-goto" value=${jump || localInput(now)}
            title=${fmt.dateTime(now)} onInput=${(e) => setJump(e.currentTarget.value)} /></label>
        <${Button} type="submit">${t("playback.go")}<//>
      </form>
      <span class="live-spacer"></span>
      <${Button} kind=${rangeMode ? "primary" : "secondary"} id="pb-range" aria-pressed=${rangeMode}
        title=${t("playback.range_hint")} onClick=${() => setRangeMode(!rangeMode)}>
        ${t("playback.range")}<//>
      <${Button} kind="ghost" icon="live" onClick=${() => ctx.navigate("live", { cameras: chosen.join(",") })}>
        ${t("playback.to_live")}<//>
    </div>
    ${body()}
    <div class=${`pb-grid pb-cols-${columns(chosen.length)}`}>
      ${shownCams.map((c) => {
        const s = states[c.id];
        const label = stateLabel(s);
        return html`<div class="tile pb-tile" key=${c.id} data-camera=${c.id}
            data-state=${s ? s.state : "idle"}>
          <video muted playsinline disablepictureinpicture
            ref=${(el) => (el ? videos.current.set(c.id, el) : videos.current.delete(c.id))}></video>
          <div class="tile-bar"><span class="tile-name" title=${c.name || c.id}>${c.name || c.id}</span>
            ${label ? html`<span class=${`badge-${s && s.state === "error" ? "error" : "paused"}`}>${label}</span>` : null}</div>
          <div class="tile-tools"><button type="button" class="tile-btn"
              title=${t("playback.snapshot")} aria-label=${t("playback.snapshot")}
              onClick=${() => downloadSnapshot(videos.current.get(c.id), c.id)}>
              <svg class="icon" viewBox="0 0 24 24" width="16" height="16" aria-hidden="true">
                <path d="M4 8h3l2-3h6l2 3h3v11H4zM12 17a4 4 0 1 0 0-8 4 4 0 0 0 0 8z" /></svg>
            </button></div>
        </div>`;
      })}
    </div>
    ${dataError ? html`<${ErrorBox} title=${t("playback.timeline.failed")} error=${dataError}
      onRetry=${fetchData} />` : null}
    <div class="pb-timeline" ref=${tlHost}></div>
    <p class="pb-help hint">${t("playback.timeline.help")}</p>
    ${range ? html`<${ExportPanel} key=${`${range.start}-${range.end}`} ctx=${ctx} range=${range}
      cameras=${shownCams} onClear=${() => { setRange(null); tl.current.setRange(null); }} />` : null}
    ${hover ? html`<div class="pb-hover" role="tooltip" style=${{
        left: `${Math.max(4, Math.min(window.innerWidth - THUMB_WIDTH - 12, hover.clientX - THUMB_WIDTH / 2))}px`,
        top: `${Math.max(4, hover.top - (hover.src ? 150 : 34))}px` }}>
      ${hover.src ? html`<img src=${hover.src} width=${THUMB_WIDTH} alt=""
        onError=${(e) => { e.currentTarget.hidden = true; }} />` : null}
      <span>${byId.get(hover.id)?.name || hover.id} · ${fmt.dateTime(hover.us)}</span>
    </div>` : null}
    ${picking ? html`<${CameraPicker} t=${t} cameras=${cameras || []} chosen=${chosen}
      onClose=${() => setPicking(false)}
      onDone=${(ids) => { setPicking(false); setView(null); setChosen(ids); }} />` : null}
  </div>`;
}

export function render(root, ctx) {
  stylesheet("live"); // the tiles' styles
  stylesheet("playback");
  mount(html`<${Playback} ctx=${ctx} />`, root);
  return () => mount(null, root);
}
