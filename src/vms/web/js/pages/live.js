// The Live page: a wall of 1, 4, 9 or 16 camera tiles (tile.js), arranged by dragging a tile
// onto another, a camera picked per tile, saved and loaded as named views (/api/v1/views,
// each user's own), full screen (F), a tile enlarged by a double click (it then plays the
// camera's main stream; grid tiles play sub where the camera has one: the players choose by
// the size a tile is shown at), tiles selected with 1–9.
//
// The URL carries the wall (#/live?layout=4&cameras=a,b,,c&view=Lobby), so a reload or a
// shared link opens the same wall; `protocol=webrtc|mse|llhls` pins the protocol (a network
// that blocks one, or a test). Without any, the last wall of this browser, else the user's
// cameras in order.
//
// Traps:
// - Tiles are keyed by their camera (and its occurrence), placed on the grid by CSS `order`:
//   a swap or a layout change moves no <video>, so no player restarts (tile.js says why).
// - A camera in a URL or a view that this user may not see is "unavailable", whatever the
//   reason: the page never learns (or tells) whether it exists.
// - Views saved before a camera was removed or a grant withdrawn come back with null there
//   (the server drops them), which is an empty tile here.

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { Button, Dialog, Empty, ErrorBox, errorText, html, render as mount, Spinner } from "../ui.js";
import { allCameras, LiveTile, loadPlayers, PROTOCOLS, stylesheet } from "../tile.js";

export const catalog = "live";

export const LAYOUTS = ["1", "4", "9", "16"];
const TILES = 16;
const LAST_KEY = "vms.live.wall";

/** The smallest layout that holds n tiles. */
export function layoutFor(n) {
  return LAYOUTS.find((l) => Number(l) >= n) || "16";
}

function padded(ids) {
  const out = ids.slice(0, TILES);
  while (out.length < TILES) out.push(null);
  return out;
}

export function parseCameras(text) {
  return text == null ? null : padded(text.split(",").map((c) => c.trim() || null));
}

function cameraParam(slots, layout) {
  const shown = slots.slice(0, Number(layout));
  while (shown.length && shown[shown.length - 1] === null) shown.pop();
  return shown.map((c) => c || "").join(",");
}

function remembered() {
  try {
    const w = JSON.parse(localStorage.getItem(LAST_KEY) || "null");
    if (w && LAYOUTS.includes(w.layout) && Array.isArray(w.cameras)) return w;
  } catch {
    // nothing remembered
  }
  return null;
}

function remember(layout, slots) {
  try {
    localStorage.setItem(LAST_KEY, JSON.stringify({ layout, cameras: cameraParam(slots, "16").split(",") }));
  } catch {
    // not remembered: no harm
  }
}

function SaveDialog({ t, initial, onSave, onClose }) {
  const [name, setName] = useState(initial || "");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const clean = name.trim();
    if (!clean) return setError(t("live.views.name_needed"));
    if (clean.includes("/")) return setError(t("live.views.name_slash"));
    setBusy(true);
    try {
      await onSave(clean);
    } catch (err) {
      setBusy(false);
      setError(errorText(err));
    }
    return undefined;
  };
  return html`<${Dialog} title=${t("live.views.save_title")} onClose=${onClose}>
    <form class="live-save" onSubmit=${submit}>
      <label class="field" for="view-name"><span>${t("live.views.name")}</span>
        <input id="view-name" value=${name} maxlength="64" required autofocus
          onInput=${(e) => setName(e.currentTarget.value)} /></label>
      ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
      <div class="dialog-actions">
        <${Button} onClick=${onClose}>${t("live.cancel")}<//>
        <${Button} kind="primary" type="submit" busy=${busy}>${t("live.views.save")}<//>
      </div>
    </form>
  <//>`;
}

function ConfirmDialog({ t, title, text, onYes, onClose }) {
  return html`<${Dialog} title=${title} onClose=${onClose}
      footer=${html`<${Button} onClick=${onClose}>${t("live.cancel")}<//>
        <${Button} kind="danger" onClick=${onYes}>${t("live.views.delete")}<//>`}>
    <p>${text}</p>
  <//>`;
}

function Wall({ ctx }) {
  const { t, api, params } = ctx;
  const [cameras, setCameras] = useState(null); // null: loading
  const [failed, setFailed] = useState(null);
  const [layout, setLayout] = useState("4");
  const [slots, setSlots] = useState(padded([]));
  const [view, setView] = useState(null); // the view loaded, by name
  const [views, setViews] = useState([]);
  const [selected, setSelected] = useState(0);
  const [enlarged, setEnlarged] = useState(null);
  const [dialog, setDialog] = useState(null); // "save" | "delete"
  const [ready, setReady] = useState(false);
  const wall = useRef(null);
  const states = useRef({});
  const forced = PROTOCOLS.includes(params.get("protocol")) ? params.get("protocol") : null;
  const live = ctx.user?.camerasFor ? ctx.user.camerasFor("live") : "*";
  const canLive = (id) => live === "*" || (Array.isArray(live) && live.includes(id));

  const byId = useMemo(() => new Map((cameras || []).map((c) => [c.id, c])), [cameras]);

  const refreshViews = () => api("/api/v1/views").then((p) => setViews(p.items))
    .catch((e) => {
      if (e.status !== 403) ctx.toast(t("live.views.load_failed", { message: errorText(e) }), "error");
    });

  // The wall to open: the URL's, a view, the last one here, or every camera.
  const open = async (signal) => {
    setFailed(null);
    loadPlayers(); // meanwhile
    try {
      const list = await allCameras(api, signal);
      setCameras(list);
      refreshViews();
      const fromUrl = parseCameras(params.get("cameras"));
      const name = params.get("view");
      let next = null;
      let named = null;
      if (fromUrl) {
        named = name;
        next = { layout: params.get("layout") || layoutFor(fromUrl.filter(Boolean).length),
          cameras: fromUrl };  // prettier-ignore
      } else if (name) {
        try {
          const v = await api(`/api/v1/views/${encodeURIComponent(name)}`, { signal });
          next = { layout: v.layout, cameras: padded(v.cameras) };
          named = name;
        } catch (e) {
          if (e.name === "AbortError") throw e;
          ctx.toast(t("live.views.open_failed", { name, message: errorText(e) }), "error");
        }
      }
      if (!next) {
        const last = remembered();
        if (last) next = { layout: last.layout, cameras: padded(last.cameras.map((c) => c || null)) };
      }
      if (!next || !next.cameras.some(Boolean)) {
        const ids = list.map((c) => c.id);
        next = { layout: layoutFor(ids.length), cameras: padded(ids) };
      }
      if (!LAYOUTS.includes(next.layout)) next.layout = layoutFor(next.cameras.filter(Boolean).length);
      setLayout(next.layout);
      setSlots(next.cameras);
      setView(named || null);
      setReady(true);
    } catch (e) {
      if (e.name !== "AbortError") setFailed(e);
    }
  };

  useEffect(() => {
    const abort = new AbortController();
    open(abort.signal);
    return () => abort.abort();
  }, []);

  // The URL and this browser's memory follow the wall.
  useEffect(() => {
    if (!ready) return;
    ctx.setParams({ layout, cameras: cameraParam(slots, layout), view }, { replace: true });
    remember(layout, slots);
  }, [ready, layout, slots, view]);

  const tiles = Number(layout);
  const shown = slots.slice(0, tiles);

  const pick = (slot, id) => {
    setSlots((s) => s.map((c, i) => (i === slot ? id : c)));
  };
  const swap = (a, b) => {
    setSlots((s) => {
      const out = s.slice();
      [out[a], out[b]] = [out[b], out[a]];
      return out;
    });
    setSelected(b);
  };
  const enlarge = (slot) => setEnlarged((e) => (e === slot ? null : slot));
  const fullscreen = () => {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else wall.current?.requestFullscreen?.().catch(() => {});
  };

  useEffect(() => {
    if (enlarged !== null && enlarged >= tiles) setEnlarged(null);
    if (selected >= tiles) setSelected(0);
  }, [tiles]);

  // Keyboard: 1–9 select a tile, Enter enlarges it, Escape goes back to the grid, F full
  // screen (the wall, not the page).
  const keys = useRef({});
  keys.current = { tiles, selected, enlarged };
  useEffect(() => {
    const offs = [];
    const add = (key, handler, label) => {
      if (ctx.shortcut) offs.push(ctx.shortcut(key, handler, label));
    };
    for (let n = 1; n <= 9; n++) {
      add(String(n), () => {
        if (n > keys.current.tiles) return false;
        setSelected(n - 1);
        if (keys.current.enlarged !== null) setEnlarged(n - 1);
        return true;
      }, n === 1 ? "live.keys.select" : undefined);
    }
    add("Enter", () => enlarge(keys.current.selected), "live.keys.enlarge");
    add("Escape", () => {
      if (keys.current.enlarged === null) return false;
      setEnlarged(null);
      return true;
    }, "live.keys.grid");
    add("f", fullscreen, "live.keys.fullscreen");
    return () => offs.forEach((off) => off());
  }, []);

  const save = async (name) => {
    await api(`/api/v1/views/${encodeURIComponent(name)}`, {
      method: "PUT", body: { layout, cameras: slots.slice(0, Number(layout)) },
    });
    setView(name);
    setDialog(null);
    ctx.toast(t("live.views.saved", { name }), "success");
    refreshViews();
  };
  const remove = async () => {
    const name = view;
    setDialog(null);
    try {
      await api(`/api/v1/views/${encodeURIComponent(name)}`, { method: "DELETE" });
      setView(null);
      ctx.toast(t("live.views.deleted", { name }), "success");
    } catch (e) {
      ctx.toast(errorText(e), "error");
    }
    refreshViews();
  };
  const load = async (name) => {
    if (!name) {
      setView(null);
      return;
    }
    try {
      const v = await api(`/api/v1/views/${encodeURIComponent(name)}`);
      setEnlarged(null);
      setLayout(v.layout);
      setSlots(padded(v.cameras));
      setView(name);
    } catch (e) {
      ctx.toast(t("live.views.open_failed", { name, message: errorText(e) }), "error");
    }
  };

  if (failed) {
    return html`<${ErrorBox} title=${t("live.load_failed")} error=${failed}
      onRetry=${() => open(new AbortController().signal)} />`;
  }
  if (!cameras) return html`<${Spinner} label=${t("live.loading")} />`;
  if (!cameras.length) {
    return html`<${Empty} icon="live" title=${t("live.no_cameras")}>${t("live.no_cameras_hint")}<//>`;
  }

  // Keys: the camera and its occurrence (a camera may fill two tiles); empty tiles by slot.
  const seen = {};
  const items = shown.map((id, slot) => {
    const n = id ? (seen[id] = (seen[id] || 0) + 1) : 0;
    return { id, slot, key: id ? `${id}#${n}` : `empty#${slot}` };
  }).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const names = new Set(views.map((v) => v.name));

  return html`<div class="live">
    <div class="live-toolbar" role="toolbar" aria-label=${t("live.toolbar")}>
      <div class="seg" role="group" aria-label=${t("live.layout")}>
        ${LAYOUTS.map((l) => html`<button type="button" class=${l === layout ? "seg-on" : ""}
          aria-pressed=${l === layout} data-layout=${l} title=${t("live.layout_n", { n: Number(l) })}
          onClick=${() => { setEnlarged(null); setLayout(l); }}>
          <span class=${`grid-icon grid-${l}`} aria-hidden="true"></span>
          <span class="sr-only">${t("live.layout_n", { n: Number(l) })}</span></button>`)}
      </div>
      <label class="live-view">
        <span class="sr-only">${t("live.views.label")}</span>
        <select id="live-view" value=${view && names.has(view) ? view : ""}
          onChange=${(e) => load(e.currentTarget.value)}>
          <option value="">${view && !names.has(view) ? view : t("live.views.none")}</option>
          ${views.map((v) => html`<option value=${v.name}>${v.name}</option>`)}
        </select>
      </label>
      <${Button} id="live-save" icon="check" onClick=${() => setDialog("save")}>${t("live.views.save")}<//>
      ${view && names.has(view) ? html`<${Button} kind="ghost" id="live-delete"
        onClick=${() => setDialog("delete")}>${t("live.views.delete")}<//>` : null}
      <span class="live-spacer"></span>
      <${Button} kind="ghost" icon="fullscreen" id="live-fullscreen" onClick=${fullscreen}
        title=${t("live.keys.fullscreen")}>${t("live.fullscreen")}<//>
    </div>
    <div ref=${wall} id="wall" class=${`wall wall-${layout}${enlarged !== null ? " wall-enlarged" : ""}`}
        data-layout=${layout}>
      ${items.map(({ id, slot, key }) => html`<${LiveTile} key=${key} ctx=${ctx}
        camera=${id ? byId.get(id) || { id, name: id } : null} known=${!id || byId.has(id)}
        cameras=${cameras} slot=${slot} index=${slot + 1} selected=${slot === selected}
        enlarged=${slot === enlarged} canLive=${!!id && canLive(id)} protocol=${forced}
        onPick=${pick} onSwap=${swap} onEnlarge=${enlarge} onSelect=${setSelected}
        onState=${(s, st) => { states.current[s] = st; }} />`)}
    </div>
    ${dialog === "save" ? html`<${SaveDialog} t=${t} initial=${view || ""} onSave=${save}
      onClose=${() => setDialog(null)} />` : null}
    ${dialog === "delete" ? html`<${ConfirmDialog} t=${t} title=${t("live.views.delete_title")}
      text=${t("live.views.delete_text", { name: view })} onYes=${remove}
      onClose=${() => setDialog(null)} />` : null}
  </div>`;
}

export function render(root, ctx) {
  stylesheet("live");
  mount(html`<${Wall} ctx=${ctx} />`, root);
  return () => mount(null, root);
}
