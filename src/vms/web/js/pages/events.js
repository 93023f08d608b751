// The Events page: detections newest first, with their snapshots; filters by camera, label,
// zone and time (kept in the URL, so a filtered list can be shared); a click plays the event
// on the Playback page, from its start.
//
// Traps:
// - The snapshot is an <img>, which sends no Authorization header: its URL carries a media
//   token for "view" on the event's camera (api.js caches one per camera until near expiry).
// - Paging is by the API's cursor (keyset on start and id): "more" appends the next page, and
//   events that arrive meanwhile do not shift it. A filter change starts over.
// - A camera in the URL that the user may not view is answered 404 by the API, exactly as an
//   unknown camera: the page says "not found", never "forbidden".
// - Times in the filter are the browser's zone (datetime-local); the API gets µs (UTC).

import { useEffect, useRef, useState } from "preact/hooks";
import { api, mediaToken } from "../api.js";
import { Button, Empty, ErrorBox, Spinner } from "../ui.js";
import {
  allPages,
  cameraName,
  fromLocalInput,
  html,
  isNotFound,
  mountPage,
  toLocalInput,
} from "./admin/kit.js";

export const catalog = "events";
const PAGE = 50;
const LABELS = ["person", "car", "bicycle", "motorbike", "bus", "dog", "cat", "motion"];

export function render(root, ctx) {
  return mountPage(root, EventsPage, ctx, "events");
}

function filtersOf(params) {
  return {
    camera: params.get("camera") || "",
    label: params.get("label") || "",
    zone: params.get("zone") || "",
    start: params.get("start") || "",
    end: params.get("end") || "",
  };
}

function query(f, cursor) {
  const q = { limit: PAGE };
  if (f.camera) q.camera = f.camera;
  if (f.label) q.label = f.label;
  if (f.zone) q.zone = f.zone;
  if (f.start) q.start = f.start;
  if (f.end) q.end = f.end;
  if (cursor) q.cursor = cursor;
  return q;
}

function EventsPage({ ctx }) {
  const { t } = ctx;
  const [filters, setFilters] = useState(() => filtersOf(ctx.params));
  const [cameras, setCameras] = useState([]);
  const [list, setList] = useState({ items: [], next: null, loading: true, error: null });

  useEffect(() => {
    const controller = new AbortController();
    allPages((cursor) =>
      api("/api/v1/cameras", { query: cursor ? { limit: 1000, cursor } : { limit: 1000 },
        signal: controller.signal }))
      .then(setCameras)
      .catch(() => setCameras([])); // the filter then offers "all cameras" only
    return () => controller.abort();
  }, []);

  const latest = useRef(0); // only the newest request's answer is shown
  const load = async (f, cursor, signal) => {
    const mine = ++latest.current;
    setList((l) => ({ ...l, loading: true, error: null }));
    try {
      const page = await api("/api/v1/events", { query: query(f, cursor), signal });
      if (mine !== latest.current) return;
      setList((l) => ({
        items: cursor ? [...l.items, ...page.items] : page.items,
        next: page.next,
        loading: false,
        error: null,
      }));
    } catch (e) {
      if (e?.name === "AbortError" || mine !== latest.current) return;
      setList((l) => ({ ...l, items: cursor ? l.items : [], loading: false, error: e }));
    }
  };

  useEffect(() => {
    const controller = new AbortController();
    load(filters, null, controller.signal);
    return () => controller.abort();
  }, [filters]);

  const apply = (f) => {
    ctx.setParams(f, { replace: true }); // merged: an empty value removes its key
    setFilters(f);
  };

  const names = Object.fromEntries(cameras.map((c) => [c.id, cameraName(c)]));
  const open = (ev) => ctx.navigate("playback", { cameras: ev.camera, t: String(ev.start_us) });

  return html`
    <section class="adm-page events-page">
      <header class="adm-page-head">
        <h1>${t("title")}</h1>
        <${Button} onClick=${() => load(filters, null)}>${t("refresh")}<//>
      </header>
      <${Filters} t=${t} cameras=${cameras} value=${filters} onApply=${apply} />
      ${list.error && (isNotFound(list.error) && filters.camera
        ? html`<${ErrorBox} title=${t("camera_not_found", { camera: filters.camera })} />`
        : html`<${ErrorBox} title=${t("load_failed")} error=${list.error}
            onRetry=${() => load(filters, null)} />`)}
      ${!list.error && !list.loading && list.items.length === 0 && html`
        <${Empty} icon="events" title=${t("empty")}>${t("empty_hint")}<//>`}
      <ul class="events-list" aria-label=${t("title")}>
        ${list.items.map((ev) => html`
          <li key=${ev.id}>
            <${EventCard} ev=${ev} ctx=${ctx} cameraLabel=${names[ev.camera] || ev.camera}
              onOpen=${() => open(ev)} />
          </li>`)}
      </ul>
      <footer class="adm-more">
        ${list.loading && html`<${Spinner} />`}
        ${!list.loading && list.next && html`
          <${Button} onClick=${() => load(filters, list.next)}>${t("more")}<//>`}
      </footer>
    </section>`;
}

function Filters({ t, cameras, value, onApply }) {
  const [f, setF] = useState(value);
  useEffect(() => setF(value), [value]);
  const set = (k) => (e) => setF({ ...f, [k]: e.currentTarget.value });
  const submit = (e) => {
    e.preventDefault();
    onApply(f);
  };
  const time = (k) => (e) => {
    const us = fromLocalInput(e.currentTarget.value);
    setF({ ...f, [k]: us === null ? "" : String(us) });
  };
  const clear = () => {
    const empty = { camera: "", label: "", zone: "", start: "", end: "" };
    setF(empty);
    onApply(empty);
  };
  return html`
    <form class="adm-filters" onSubmit=${submit} aria-label=${t("filters")}>
      <label>${t("camera")}
        <select name="camera" value=${f.camera}
          onChange=${(e) => { const n = { ...f, camera: e.currentTarget.value }; setF(n);
            onApply(n); }}>
          <option value="">${t("all_cameras")}</option>
          ${cameras.map((c) => html`<option value=${c.id}>${cameraName(c)}</option>`)}
          ${f.camera && !cameras.some((c) => c.id === f.camera) &&
            html`<option value=${f.camera}>${f.camera}</option>`}
        </select>
      </label>
      <label>${t("label")}
        <input name="label" list="events-labels" value=${f.label} onInput=${set("label")}
          maxlength="64" placeholder=${t("any")} autocomplete="off" />
        <datalist id="events-labels">
          ${LABELS.map((l) => html`<option value=${l} />`)}
        </datalist>
      </label>
      <label>${t("zone")}
        <input name="zone" value=${f.zone} onInput=${set("zone")} maxlength="64"
          placeholder=${t("any")} autocomplete="off" />
      </label>
      <label>${t("from")}
        <input name="start" type="datetime-local" value=${toLocalInput(f.start)}
          onChange=${time("start")} />
      </label>
      <label>${t("to")}
        <input name="end" type="datetime-local" value=${toLocalInput(f.end)}
          onChange=${time("end")} />
      </label>
      <div class="adm-filter-buttons">
        <${Button} type="submit" kind="primary">${t("apply")}<//>
        <${Button} kind="ghost" onClick=${clear}>${t("clear")}<//>
      </div>
    </form>`;
}

function Snapshot({ ev, alt, t }) {
  const [src, setSrc] = useState(null);
  const [failed, setFailed] = useState(false);
  const tries = useRef(0);
  const fetchSrc = () => {
    let live = true;
    mediaToken(ev.camera, "view")
      .then((token) => {
        if (!live) return;
        const url = new URL(ev.snapshot_box_url, location.origin);
        url.searchParams.set("token", token);
        setSrc(url.pathname + url.search);
      })
      .catch(() => live && setFailed(true));
    return () => {
      live = false;
    };
  };
  useEffect(() => {
    tries.current = 0;
    setFailed(false);
    return ev.snapshot_box_url ? fetchSrc() : undefined;
  }, [ev.id, ev.snapshot_box_url]);
  // A lazy image far down the list loads when scrolled to, maybe after its token expired:
  // one more try with a token asked for now (api.js hands out a fresh one near expiry).
  const onError = () => {
    tries.current += 1;
    if (tries.current > 1) setFailed(true);
    else fetchSrc();
  };
  if (!ev.snapshot_box_url || failed) {
    return html`<div class="events-snap events-nosnap">${t(failed ? "snapshot_failed"
      : "no_snapshot")}</div>`;
  }
  return html`<img class="events-snap" src=${src || undefined} alt=${alt} loading="lazy"
    decoding="async" width="320" height="180" onError=${onError} />`;
}

function EventCard({ ev, ctx, cameraLabel, onOpen }) {
  const { t, fmt } = ctx;
  const duration = ev.end_us ? (ev.end_us - ev.start_us) / 1e6 : null;
  const label = LABELS.includes(ev.label) ? t(`label_${ev.label}`) : ev.label;
  return html`
    <button type="button" class="events-card" data-event=${ev.id} onClick=${onOpen}
      title=${t("open_in_playback")}>
      <${Snapshot} ev=${ev} t=${t} alt=${t("snapshot_alt", { label, camera: cameraLabel })} />
      <span class="events-meta">
        <span class="events-label">${label}
          <span class="events-score">${Math.round(ev.top_score * 100)}%</span></span>
        <span class="events-camera">${cameraLabel}</span>
        <time class="events-time" datetime=${ev.start}>${fmt.dateTime(ev.start_us)}</time>
        <span class="events-duration">${ev.active
          ? html`<span class="badge adm-state-online">${t("active")}</span>`
          : fmt.duration(duration)}</span>
        ${ev.zones.length > 0 && html`
          <span class="events-zones">${ev.zones.map((z) => html`
            <span class="adm-chip">${z}</span>`)}</span>`}
      </span>
    </button>`;
}
