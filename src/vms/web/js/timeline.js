// The Playback page's timeline: a ruler and one row per camera, drawn on a canvas, showing
// what was recorded (runs, and the density of recorded seconds where runs are too many), the
// gaps, events (a bar per event, coloured by label) and motion (a heat strip), with the
// playhead, the hover line and a selected range on a second canvas above.
//
//   const tl = new Timeline(host, { t, onSeek, onWindow, onRange, onHover });
//   tl.setRows([{id, name}]); tl.setWindow(startUs, endUs); tl.setData(id, {...});
//   tl.setTime(us); tl.setRange({start, end} | null); tl.setRangeMode(bool); tl.destroy();
//
// Gestures: the wheel zooms about the pointer (a week down to ten seconds), a horizontal wheel
// or Shift+wheel pans, a drag on the ruler pans, a click or drag on the rows seeks
// (onSeek(us, false) while dragging, onSeek(us, true) at the end), and with Shift or in range
// mode a drag selects a range (onRange). Two fingers pinch. Times are µs since the epoch, and
// the ruler's ticks fall on whole units of the browser's local time.
//
// Traps:
// - The canvases are sized in device pixels (crisp lines on a high-density screen) and drawn
//   in CSS pixels through a scale; a resize redraws and tells the page (onWindow: its
//   buckets depend on the width).
// - Camera names are the users' text: they are DOM text (labels column), never markup.
// - The base canvas is redrawn only when the data or the window change; the playhead and the
//   hover move on the overlay, so playing costs one small redraw a frame.

export const DAY_US = 86400e6;
export const MIN_SPAN_US = 10e6;
export const MAX_SPAN_US = 7 * DAY_US;
const RULER_H = 28;
const ROW_H = 38;
const TICK_MIN_PX = 96; // labelled ticks at least this far apart
const STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
  43200, 86400, 172800];  // prettier-ignore
const SEEK_EVERY_MS = 80; // while dragging: at most this often

// The labels most events have, in colours apart from the recording's blue.
const LABEL_COLORS = { person: "#f97316", car: "#a855f7", truck: "#d946ef", bicycle: "#14b8a6",
  motorbike: "#eab308", dog: "#84cc16", cat: "#ec4899" };  // prettier-ignore

/** A colour for an event label, the same each time (else a hue from its hash). */
export function labelColor(label) {
  if (LABEL_COLORS[label]) return LABEL_COLORS[label];
  let h = 0;
  for (const ch of String(label)) h = (h * 31 + ch.codePointAt(0)) % 360;
  return `hsl(${h} 75% 55%)`;
}

const lang = () => document.documentElement.lang || undefined;
const formats = new Map();
function format(kind, options) {
  const key = `${lang()}|${kind}`;
  if (!formats.has(key)) formats.set(key, new Intl.DateTimeFormat(lang(), options));
  return formats.get(key);
}
const tzOffsetMs = (ms) => -new Date(ms).getTimezoneOffset() * 60000;

export class Timeline {
  constructor(host, { t, onSeek, onWindow, onRange, onHover } = {}) {
    this.host = host;
    this.t = t || ((k) => k);
    this.onSeek = onSeek || (() => {});
    this.onWindow = onWindow || (() => {});
    this.onRange = onRange || (() => {});
    this.onHover = onHover || (() => {});
    this.rows = [];
    this.data = new Map();
    const now = Date.now() * 1000;
    this.start = now - 3600e6;
    this.end = now + 300e6;
    this.time = null;
    this.range = null;
    this.rangeMode = false;
    this.hover = null; // µs under the pointer
    this.drag = null;
    this.pointers = new Map();
    this.width = 0;
    this.lastSeek = 0;
    this.build();
  }

  // --- the DOM --------------------------------------------------------------------------------

  build() {
    const el = (tag, cls) => {
      const e = document.createElement(tag);
      if (cls) e.className = cls;
      return e;
    };
    this.root = el("div", "tl");
    this.labels = el("div", "tl-labels");
    this.box = el("div", "tl-box");
    this.box.tabIndex = 0;
    this.box.setAttribute("role", "slider");
    this.box.setAttribute("aria-label", this.t("playback.timeline.label"));
    this.base = el("canvas", "tl-base");
    this.over = el("canvas", "tl-over");
    this.box.append(this.base, this.over);
    this.root.append(this.labels, this.box);
    this.host.replaceChildren(this.root);
    this.handlers = {
      wheel: (e) => this.wheel(e),
      pointerdown: (e) => this.down(e),
      pointermove: (e) => this.move(e),
      pointerup: (e) => this.up(e),
      pointercancel: (e) => this.up(e),
      pointerleave: () => this.leave(),
    };
    for (const [name, f] of Object.entries(this.handlers)) {
      this.box.addEventListener(name, f, name === "wheel" ? { passive: false } : undefined);
    }
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(this.box);
  }

  destroy() {
    this.resizer.disconnect();
    for (const [name, f] of Object.entries(this.handlers)) this.box.removeEventListener(name, f);
    this.root.remove();
  }

  resize() {
    const w = Math.max(1, Math.floor(this.box.clientWidth));
    const h = RULER_H + Math.max(1, this.rows.length) * ROW_H;
    const dpr = window.devicePixelRatio || 1;
    for (const c of [this.base, this.over]) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
      c.style.width = `${w}px`;
      c.style.height = `${h}px`;
    }
    this.box.style.height = `${h}px`;
    const changed = w !== this.width;
    this.width = w;
    this.draw();
    if (changed) this.onWindow(this.start, this.end);
  }

  // --- what is shown --------------------------------------------------------------------------

  setRows(rows) {
    this.rows = rows;
    this.labels.replaceChildren();
    const ruler = document.createElement("div");
    ruler.className = "tl-label tl-ruler-label";
    this.labels.append(ruler);
    for (const r of rows) {
      const label = document.createElement("div");
      label.className = "tl-label";
      label.dataset.camera = r.id;
      label.textContent = r.name || r.id; // the user's text: never markup
      label.title = r.name || r.id;
      this.labels.append(label);
    }
    for (const id of [...this.data.keys()]) if (!rows.some((r) => r.id === id)) this.data.delete(id);
    this.resize();
  }

  /** The window shown, clamped to [MIN_SPAN_US, MAX_SPAN_US] and to a little past now. */
  setWindow(start, end, { tell = true } = {}) {
    let span = Math.min(MAX_SPAN_US, Math.max(MIN_SPAN_US, end - start));
    const mid = (start + end) / 2;
    start = mid - span / 2;
    const latest = Date.now() * 1000 + span * 0.25;
    if (start + span > latest) start = latest - span;
    start = Math.max(0, start);
    span = Math.round(span);
    start = Math.round(start);
    const same = start === this.start && start + span === this.end;
    this.start = start;
    this.end = start + span;
    this.box.dataset.start = String(this.start); // where the window is (tests read it too)
    this.box.dataset.end = String(this.end);
    this.draw();
    if (tell && !same) this.onWindow(this.start, this.end);
  }

  /** One camera's data: {runs: [[s, e]], density: [seconds], bucketUs, start, moreRuns,
   *  events: [{start, end, label}], motion: {start, bucketUs, values: [0–255]}}. */
  setData(id, data) {
    this.data.set(id, { ...(this.data.get(id) || {}), ...data });
    this.drawBase();
  }

  setTime(us) {
    this.time = us;
    this.box.setAttribute("aria-valuetext", us == null ? "" : new Date(us / 1000).toLocaleString());
    this.drawOver();
  }

  setRange(range) {
    this.range = range;
    this.drawOver();
  }

  setRangeMode(on) {
    this.rangeMode = !!on;
    this.box.classList.toggle("tl-range-mode", this.rangeMode);
  }

  // --- coordinates ----------------------------------------------------------------------------

  x(us) {
    return ((us - this.start) / (this.end - this.start)) * this.width;
  }

  us(x) {
    return this.start + (x / this.width) * (this.end - this.start);
  }

  local(e) {
    const r = this.box.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }

  rowAt(y) {
    const i = Math.floor((y - RULER_H) / ROW_H);
    return y >= RULER_H && i >= 0 && i < this.rows.length ? i : null;
  }

  // --- drawing --------------------------------------------------------------------------------

  colors() {
    const s = getComputedStyle(this.root);
    const v = (name, fallback) => s.getPropertyValue(name).trim() || fallback;
    return {
      bg: v("--tl-bg", "#11161d"), alt: v("--tl-alt", "#161c25"), gap: v("--tl-gap", "#2a3140"),
      rec: v("--tl-rec", "#3b82f6"), motion: v("--tl-motion", "#f59e0b"),
      text: v("--tl-text", "#aab3c0"), tick: v("--tl-tick", "#3a4454"),
      head: v("--tl-head", "#ef4444"), now: v("--tl-now", "#4ade80"),
      range: v("--tl-range", "rgb(79 140 255 / 25%)"), edge: v("--tl-edge", "#4f8cff"),
    };
  }

  draw() {
    this.drawBase();
    this.drawOver();
  }

  context(canvas) {
    const g = canvas.getContext("2d");
    const dpr = canvas.width / Math.max(1, this.width);
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, this.width, canvas.height / dpr);
    return g;
  }

  ticks() {
    const spanS = (this.end - this.start) / 1e6;
    const step = STEPS_S.find((s) => (s / spanS) * this.width >= TICK_MIN_PX) || STEPS_S.at(-1);
    const stepMs = step * 1000;
    const out = [];
    const startMs = this.start / 1000;
    const endMs = this.end / 1000;
    if (step >= 86400) {
      const d = new Date(startMs);
      d.setHours(0, 0, 0, 0);
      while (d.getTime() < endMs) {
        if (d.getTime() >= startMs) out.push({ ms: d.getTime(), day: true });
        d.setDate(d.getDate() + step / 86400);
      }
    } else {
      const off = tzOffsetMs(startMs);
      let ms = Math.ceil((startMs + off) / stepMs) * stepMs - off;
      for (; ms < endMs; ms += stepMs) {
        const local = ms + tzOffsetMs(ms);
        out.push({ ms, day: local % 86400000 === 0 });
      }
    }
    return { step, ticks: out };
  }

  tickLabel(ms, step, day) {
    if (day) return format("day", { day: "numeric", month: "short" }).format(ms);
    if (step < 60) return format("sec", { hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(ms);
    return format("min", { hour: "2-digit", minute: "2-digit" }).format(ms);
  }

  drawBase() {
    if (!this.width) return;
    const g = this.context(this.base);
    const c = this.colors();
    const h = RULER_H + this.rows.length * ROW_H;
    const now = Date.now() * 1000;
    g.fillStyle = c.bg;
    g.fillRect(0, 0, this.width, h);
    // The ruler.
    const { step, ticks } = this.ticks();
    g.font = "11px system-ui, sans-serif";
    g.textBaseline = "middle";
    for (const { ms, day } of ticks) {
      const x = Math.round(this.x(ms * 1000)) + 0.5;
      g.strokeStyle = c.tick;
      g.lineWidth = day ? 2 : 1;
      g.beginPath();
      g.moveTo(x, RULER_H - (day ? 12 : 7));
      g.lineTo(x, h);
      g.stroke();
      g.fillStyle = c.text;
      g.fillText(this.tickLabel(ms, step, day), x + 4, RULER_H / 2 - 2);
    }
    // The rows.
    this.rows.forEach((row, i) => {
      const y = RULER_H + i * ROW_H;
      if (i % 2) {
        g.fillStyle = c.alt;
        g.globalAlpha = 0.5;
        g.fillRect(0, y, this.width, ROW_H);
        g.globalAlpha = 1;
      }
      const top = y + 9;
      const bar = ROW_H - 17;
      const d = this.data.get(row.id) || {};
      // Not recorded, up to now: the gap colour; recorded runs and density over it.
      const gapEnd = Math.min(this.width, this.x(now));
      if (gapEnd > 0) {
        g.fillStyle = c.gap;
        g.fillRect(0, top, gapEnd, bar);
      }
      g.fillStyle = c.rec;
      if (d.density && d.bucketUs) {
        d.density.forEach((sec, k) => {
          if (sec <= 0) return;
          const x0 = this.x(d.start + k * d.bucketUs);
          const x1 = this.x(d.start + (k + 1) * d.bucketUs);
          g.globalAlpha = 0.35 + 0.65 * Math.min(1, (sec * 1e6) / d.bucketUs);
          g.fillRect(x0, top, Math.max(1, x1 - x0), bar);
        });
        g.globalAlpha = 1;
      }
      if (d.runs && !d.moreRuns) {
        for (const [s, e] of d.runs) {
          if (e < this.start || s > this.end) continue;
          const x0 = Math.max(-1, this.x(s));
          const x1 = Math.min(this.width + 1, this.x(e));
          g.fillRect(x0, top, Math.max(1, x1 - x0), bar);
        }
      }
      if (d.motion && d.motion.bucketUs) {
        g.fillStyle = c.motion;
        d.motion.values.forEach((v, k) => {
          if (!v) return;
          const x0 = this.x(d.motion.start + k * d.motion.bucketUs);
          const x1 = this.x(d.motion.start + (k + 1) * d.motion.bucketUs);
          // Scores are the share of the picture that changed: small for people in a street.
          g.globalAlpha = Math.min(1, 0.3 + Math.sqrt(v / 255) * 1.4);
          g.fillRect(x0, top + bar - 5, Math.max(1, x1 - x0), 5);
        });
        g.globalAlpha = 1;
      }
      for (const ev of d.events || []) {
        const end = ev.end ?? now;
        if (end < this.start || ev.start > this.end) continue;
        const x0 = this.x(ev.start);
        g.fillStyle = labelColor(ev.label);
        g.fillRect(x0, y + 2, Math.max(3, this.x(end) - x0), 5);
      }
    });
    // Now: where recording goes on.
    const xn = Math.round(this.x(now)) + 0.5;
    if (xn >= 0 && xn <= this.width) {
      g.strokeStyle = c.now;
      g.setLineDash([3, 3]);
      g.beginPath();
      g.moveTo(xn, RULER_H);
      g.lineTo(xn, h);
      g.stroke();
      g.setLineDash([]);
    }
  }

  drawOver() {
    if (!this.width) return;
    const g = this.context(this.over);
    const c = this.colors();
    const h = RULER_H + this.rows.length * ROW_H;
    if (this.range) {
      const x0 = this.x(Math.min(this.range.start, this.range.end));
      const x1 = this.x(Math.max(this.range.start, this.range.end));
      g.fillStyle = c.range;
      g.fillRect(x0, 0, Math.max(2, x1 - x0), h);
      g.fillStyle = c.edge;
      g.fillRect(x0 - 1, 0, 2, h);
      g.fillRect(x1 - 1, 0, 2, h);
    }
    const line = (us, color, label) => {
      const x = Math.round(this.x(us)) + 0.5;
      if (x < -1 || x > this.width + 1) return;
      g.strokeStyle = color;
      g.lineWidth = label ? 2 : 1;
      g.beginPath();
      g.moveTo(x, 0);
      g.lineTo(x, h);
      g.stroke();
      if (!label) return;
      g.font = "600 11px system-ui, sans-serif";
      const w = g.measureText(label).width + 10;
      const lx = Math.min(Math.max(0, x - w / 2), this.width - w);
      g.fillStyle = color;
      g.fillRect(lx, 2, w, RULER_H - 8);
      g.fillStyle = "#fff";
      g.textBaseline = "middle";
      g.fillText(label, lx + 5, RULER_H / 2 - 2);
    };
    if (this.hover != null && !this.drag) line(this.hover, c.text, null);
    if (this.time != null) {
      const label = format("head", { hour: "2-digit", minute: "2-digit", second: "2-digit" })
        .format(this.time / 1000);
      line(this.time, c.head, label);
    }
  }

  // --- gestures -------------------------------------------------------------------------------

  zoomAt(x, factor) {
    const at = this.us(x);
    const span = Math.min(MAX_SPAN_US, Math.max(MIN_SPAN_US, (this.end - this.start) * factor));
    const start = at - (x / this.width) * span;
    this.setWindow(start, start + span);
  }

  pan(dx) {
    const shift = (dx / this.width) * (this.end - this.start);
    this.setWindow(this.start - shift, this.end - shift);
  }

  wheel(e) {
    e.preventDefault();
    const [x] = this.local(e);
    const dx = e.deltaX || (e.shiftKey ? e.deltaY : 0);
    if (Math.abs(dx) > Math.abs(e.deltaY) || e.shiftKey) this.pan(-dx);
    else this.zoomAt(x, Math.exp(e.deltaY * 0.0015));
  }

  down(e) {
    if (e.button !== 0) return;
    const [x, y] = this.local(e);
    this.pointers.set(e.pointerId, x);
    this.box.setPointerCapture(e.pointerId);
    if (this.pointers.size === 2) {
      const [a, b] = [...this.pointers.values()];
      this.drag = { kind: "pinch", d: Math.abs(a - b) || 1, start: this.start, end: this.end };
      return;
    }
    if (y < RULER_H) {
      this.drag = { kind: "pan", x, start: this.start, end: this.end };
    } else if (this.rangeMode || e.shiftKey) {
      const at = this.us(x);
      this.drag = { kind: "range", from: at };
      this.setRange({ start: at, end: at });
    } else {
      this.drag = { kind: "seek" };
      this.seek(x, false);
    }
  }

  seek(x, done) {
    const at = Math.round(Math.min(Math.max(this.us(x), this.start), this.end));
    this.time = at;
    this.drawOver();
    const now = performance.now();
    if (done || now - this.lastSeek >= SEEK_EVERY_MS) {
      this.lastSeek = now;
      this.onSeek(at, done);
    }
  }

  move(e) {
    const [x, y] = this.local(e);
    if (this.pointers.has(e.pointerId)) this.pointers.set(e.pointerId, x);
    const d = this.drag;
    if (d && d.kind === "pinch" && this.pointers.size === 2) {
      const [a, b] = [...this.pointers.values()];
      const span = ((d.end - d.start) * d.d) / (Math.abs(a - b) || 1);
      const mid = (d.start + d.end) / 2;
      this.setWindow(mid - span / 2, mid + span / 2);
      return;
    }
    if (d && d.kind === "pan") {
      const shift = ((x - d.x) / this.width) * (d.end - d.start);
      this.setWindow(d.start - shift, d.end - shift);
      return;
    }
    if (d && d.kind === "range") {
      this.setRange({ start: d.from, end: this.us(x) });
      return;
    }
    if (d && d.kind === "seek") {
      this.seek(x, false);
      return;
    }
    this.hover = this.us(x);
    this.drawOver();
    const row = this.rowAt(y);
    const r = this.box.getBoundingClientRect();
    this.onHover(row === null ? null : {
      row, id: this.rows[row].id, us: this.hover, clientX: e.clientX,
      top: r.top + RULER_H + row * ROW_H, bottom: r.top + RULER_H + (row + 1) * ROW_H,
    });  // prettier-ignore
  }

  up(e) {
    if (!this.pointers.has(e.pointerId)) return;
    this.pointers.delete(e.pointerId);
    const d = this.drag;
    if (this.pointers.size > 0) return; // a pinch ends when both fingers are up
    this.drag = null;
    if (!d) return;
    const [x] = this.local(e);
    if (d.kind === "seek") this.seek(x, true);
    if (d.kind === "range") {
      const a = Math.round(Math.min(d.from, this.us(x)));
      const b = Math.round(Math.max(d.from, this.us(x)));
      if (b - a < 1e6) {
        this.setRange(null); // a click, not a range
        this.onRange(null);
      } else {
        this.setRange({ start: a, end: b });
        this.onRange({ start: a, end: b });
      }
    }
  }

  leave() {
    this.hover = null;
    this.drawOver();
    this.onHover(null);
  }
}
