// Recorded video in the browser, several cameras in step: a RecordedPlayer per camera plays
// GET …/playback.mp4 of a range through MediaSource, and a Sync keeps them on one clock.
//
//   const p = new RecordedPlayer(video, cameraId, { api, mediaToken, onState });
//   const sync = new Sync(() => [p, ...], { onTime });
//   sync.seek(us); sync.play(); sync.setSpeed(8); sync.step(+1); sync.destroy();
//
// A player asks the plan first (GET …/playback: the MIME type, and the pieces that map the
// stream's output time to wall time), then streams the MP4 of [T, T + CHUNK_US) into a
// SourceBuffer, reading only as fast as it plays (backpressure on the HTTP body: the buffer
// ahead stays under AHEAD_S of media), trimming what is behind. Past the range's end, or too
// far from what is buffered, it opens the next range where the clock is.
//
// The clock: wall time (µs) advancing at the speed. While one player plays media (the lead:
// the first in order that does) the clock is that player's picture; every other player whose
// picture is more than DRIFT_S away from it is put back on it. While players load after a seek,
// or stall, the clock waits for them; while none has a recording at the clock's time (gaps),
// it runs on its own, and each player picks up where its next recording starts.
//
// Traps:
// - The plan and the stream must be of the same [start, end): output time 0 is the keyframe at
//   or before start, and the instant asked for is at offset_s.
// - Output time is not wall time: a run is placed at its wall distance from the first piece,
//   and within a run the camera's clock rules. Only the plan's pieces map one to the other.
// - Above MAX_FULL_SPEED the stream is keyframes only (trick play, keyframes=forward), at the
//   same output times; changing side of that line opens the range again.
// - G.711 audio does not play in MSE: a plan whose MIME the browser refuses is played video
//   only (audio=0), and a codec the browser lacks (H.265 in most) is said so, not retried.

export const CHUNK_US = 3600e6; // one range: an hour (then the next)
export const DRIFT_S = 0.3; // a player further than this from the clock is put back on it
export const MAX_FULL_SPEED = 4; // faster: keyframes only
const AHEAD_S = 20; // media buffered ahead of the playing position, at 1× (more when faster)
const BEHIND_S = 10; // kept behind it
const TICK_MS = 200;
const LIVE_EDGE_US = 2e6; // the clock stops this close to now: there is nothing after
const FRAME_S = 0.04; // a frame, until the video says otherwise

const nowUs = () => Date.now() * 1000;
const wait = (ms) => new Promise((r) => setTimeout(r, ms));

function once(target, name) {
  return new Promise((resolve) => target.addEventListener(name, resolve, { once: true }));
}

/** A camera's recorded video in one <video>; state: idle, loading, ready, norec, error. */
export class RecordedPlayer {
  constructor(video, camera, { api, mediaToken, onState, stream = "main" }) {
    Object.assign(this, { video, camera, api, mediaToken, stream });
    this.onState = onState || (() => {});
    this.state = "idle";
    this.detail = "";
    this.load = null; // {start, end, pieces, trick, abort, source, url, closed}
    this.generation = 0;
    this.frame = FRAME_S;
    this.norecUntil = null; // no recording from the last open to here (a wall time)
    this.watchFrames();
  }

  set(state, detail = "") {
    if (state === this.state && detail === this.detail) return;
    this.state = state;
    this.detail = detail;
    this.onState(state, detail);
  }

  // The frame shown (its media time) and the duration of a frame, from the frames the video
  // presents (for frame steps): the median of the last intervals, seeks left out.
  watchFrames() {
    if (!this.video.requestVideoFrameCallback) return;
    const gaps = [];
    let last = null;
    const tick = (_now, meta) => {
      if (this.destroyed) return;
      this.shownMedia = meta.mediaTime;
      if (last !== null) {
        const d = meta.mediaTime - last;
        if (d > 0.005 && d < 0.5 && !this.video.paused) {
          gaps.push(d);
          if (gaps.length > 15) gaps.shift();
          this.frame = [...gaps].sort((a, b) => a - b)[gaps.length >> 1];
        }
      }
      last = meta.mediaTime;
      this.video.requestVideoFrameCallback(tick);
    };
    this.video.requestVideoFrameCallback(tick);
  }

  close() {
    this.generation += 1;
    const l = this.load;
    this.load = null;
    if (!l) return;
    l.closed = true;
    l.abort.abort();
    this.video.removeAttribute("src");
    this.video.load();
    URL.revokeObjectURL(l.url);
  }

  destroy() {
    this.destroyed = true;
    this.close();
  }

  /** Opens [at, at + CHUNK_US) (or up to now) and puts the picture at `at`. */
  async open(at, { trick = false } = {}) {
    this.close();
    const mine = this.generation;
    const end = Math.min(at + CHUNK_US, nowUs());
    this.set("loading");
    this.norecUntil = null;
    const id = encodeURIComponent(this.camera);
    const query = { start: Math.round(at), end: Math.round(end), stream: this.stream };
    let plan;
    try {
      if (end - at < 1e6) throw Object.assign(new Error("nothing yet"), { status: 404 });
      plan = await this.api(`/api/v1/cameras/${id}/playback`, { query });
    } catch (e) {
      if (mine !== this.generation) return;
      if (e.status === 404) {
        this.norecUntil = end;
        this.set("norec");
      } else {
        this.set("error", e.message || String(e));
      }
      return;
    }
    if (mine !== this.generation) return;
    const MS = window.MediaSource || window.ManagedMediaSource;
    let mime = trick ? plan.video_mime : plan.mime;
    let audio = !trick;
    if (!MS || !MS.isTypeSupported(mime)) {
      mime = plan.video_mime;
      audio = false;
    }
    if (!MS || !MS.isTypeSupported(mime)) {
      this.set("error", `codec: ${plan.runs[0] ? plan.runs[0].codec : mime}`);
      return;
    }
    const source = new MS();
    const l = {
      start: at, end, trick, source, closed: false, abort: new AbortController(),
      url: URL.createObjectURL(source), first: plan.first_us, offset: plan.offset_s,
      pieces: plan.pieces.map((p) => ({ s: p.start_us, e: p.end_us, os: p.output_start_s,
        oe: p.output_end_s })),  // prettier-ignore
      sb: null, placed: false, done: false,
    };
    this.load = l;
    this.video.disableRemotePlayback = true;
    this.video.src = l.url;
    await once(source, "sourceopen");
    if (l.closed) return;
    l.sb = source.addSourceBuffer(mime);
    l.sb.mode = "segments";
    try {
      const token = await this.mediaToken(this.camera, "playback");
      const q = new URLSearchParams({ ...query, token });
      if (trick) q.set("keyframes", "forward");
      else if (!audio) q.set("audio", "0");
      const r = await fetch(`/api/v1/cameras/${id}/playback.mp4?${q}`, { signal: l.abort.signal });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      await this.pump(l, r.body.getReader());
    } catch (e) {
      if (!l.closed) this.set("error", e.message || String(e));
    }
  }

  ahead(l) {
    const b = l.sb.buffered;
    const t = this.video.currentTime;
    for (let i = 0; i < b.length; i++) if (b.start(i) <= t + 0.1 && t < b.end(i)) return b.end(i) - t;
    return b.length && b.start(0) > t ? b.end(b.length - 1) - t : 0;
  }

  async append(l, data) {
    for (let attempt = 0; ; attempt++) {
      if (l.sb.updating) await once(l.sb, "updateend");
      if (l.closed) return;
      try {
        l.sb.appendBuffer(data);
        await once(l.sb, "updateend");
        return;
      } catch (e) {
        if (e.name !== "QuotaExceededError" || attempt > 0) throw e;
        await this.trim(l, 1); // full: keep only a second behind, and try again
      }
    }
  }

  async trim(l, keep = BEHIND_S) {
    const b = l.sb.buffered;
    const t = this.video.currentTime;
    if (!b.length || t - b.start(0) < keep + 5) return;
    if (l.sb.updating) await once(l.sb, "updateend");
    l.sb.remove(0, t - keep);
    await once(l.sb, "updateend");
  }

  async pump(l, reader) {
    try {
      for (;;) {
        const rate = Math.max(1, Math.abs(this.video.playbackRate || 1));
        while (!l.closed && l.placed && this.ahead(l) > AHEAD_S * rate) await wait(250);
        if (l.closed) return;
        const { done, value } = await reader.read();
        if (done || l.closed) break;
        await this.append(l, value);
        if (l.closed) return;
        if (!l.placed && l.sb.buffered.length) {
          l.placed = true;
          this.video.currentTime = l.offset; // the instant asked for
          this.set("ready");
        }
        await this.trim(l);
      }
      l.done = true;
      if (!l.placed && !l.closed) {
        this.norecUntil = l.end;
        this.set("norec");
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  /** Wall time (µs) of output time m, or null outside the pieces. */
  wallOf(m) {
    const l = this.load;
    if (!l) return null;
    for (const p of l.pieces) if (p.os <= m && m < p.oe + 0.001) return p.s + (m - p.os) * 1e6;
    return null;
  }

  /** Output time of wall time w in this range: {m} (recorded), {gap, next} or null (outside). */
  mediaOf(w) {
    const l = this.load;
    if (!l || w < l.first - 1 || w >= l.end) return null;
    for (const p of l.pieces) {
      if (p.s <= w && w < p.e) return { m: p.os + (w - p.s) / 1e6 };
      if (p.s > w) return { gap: true, next: p.s };
    }
    return { gap: true, next: null };
  }

  /** Output and wall time a frame away (dir ±1), across a hole between two runs; or null. */
  frameAway(dir) {
    const l = this.load;
    const t = this.video.currentTime;
    if (!l || this.state !== "ready") return null;
    // From the frame shown: into the middle of the next (or the previous) one, whatever the
    // position within the frame shown and the estimate's error.
    const near = this.shownMedia !== undefined && Math.abs(this.shownMedia - t) < this.frame * 1.5;
    const shown = near ? this.shownMedia : t;
    const m = Math.max(0, dir > 0 ? shown + this.frame * 1.5 : shown - this.frame * 0.5);
    const w = this.wallOf(m);
    if (w !== null) return { m, w };
    if (dir > 0) {
      const p = l.pieces.find((x) => x.os > t);
      return p ? { m: p.os, w: p.s } : null;
    }
    const p = [...l.pieces].reverse().find((x) => x.oe <= t);
    return p ? { m: p.oe - this.frame, w: p.e - this.frame * 1e6 } : null;
  }

  /** The wall time of the picture shown, or null. */
  wallNow() {
    return this.state === "ready" ? this.wallOf(this.video.currentTime) : null;
  }

  buffered(m) {
    const b = this.load ? this.load.sb?.buffered : null;
    if (!b) return false;
    for (let i = 0; i < b.length; i++) if (b.start(i) - 0.05 <= m && m <= b.end(i) + 2) return true;
    return false;
  }

  /**
   * Follows the clock: opens what covers w, seeks when further than `drift` s from it, plays
   * or pauses. lead: this player is the clock (never corrected).
   */
  follow(w, { playing, speed, trick, lead, drift }) {
    if (this.destroyed || this.state === "loading" || this.state === "error") return;
    if (this.state === "norec" || this.state === "idle") {
      if (this.state === "norec" && this.norecUntil !== null && w < this.norecUntil &&
          w >= (this.norecFrom ?? -Infinity)) return;  // prettier-ignore
      this.norecFrom = w;
      this.open(w, { trick });
      return;
    }
    const l = this.load;
    const at = this.mediaOf(w);
    if (!l || l.trick !== trick || at === null || (at.m !== undefined && !this.buffered(at.m) &&
        l.placed && (at.m < this.video.currentTime || at.m - this.video.currentTime > 5))) {
      this.norecFrom = w;
      this.open(w, { trick });
      return;
    }
    const v = this.video;
    const rate = Math.min(16, Math.max(0.0625, speed));
    if (v.playbackRate !== rate) v.playbackRate = rate;
    if (at.gap) {
      this.gap = true;
      if (!v.paused) v.pause();
      this.onState(this.state, "gap");
      return;
    }
    if (this.gap) {
      this.gap = false;
      this.onState(this.state, "");
    }
    if (!lead && l.placed && !v.seeking && Math.abs(v.currentTime - at.m) > drift) {
      v.currentTime = at.m;
    }
    if (playing && v.paused) v.play().catch(() => {});
    if (!playing && !v.paused) v.pause();
  }

  /** Playing media now (a candidate to lead the clock). */
  playing() {
    const v = this.video;
    return this.state === "ready" && !this.gap && !v.paused && !v.seeking && v.readyState >= 3;
  }

  /** Holding the clock up: loading, or with a picture to show but no data for it yet. */
  waiting(w) {
    if (this.state === "loading") return true;
    if (this.state !== "ready" || this.gap) return false;
    const at = this.mediaOf(w);
    return !!(at && at.m !== undefined && (this.video.seeking || this.video.readyState < 3));
  }
}

/** One clock for several players (see the module). onTime(us, playing) on every tick. */
export class Sync {
  constructor(players, { onTime, onEdge } = {}) {
    this.players = players; // () => [RecordedPlayer]
    this.onTime = onTime || (() => {});
    this.onEdge = onEdge || (() => {});
    this.wall = nowUs() - 60e6;
    this.perf = performance.now();
    this.running = false;
    this.speed = 1;
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  get trick() {
    return this.speed > MAX_FULL_SPEED;
  }

  now() {
    if (!this.running) return this.wall;
    return this.wall + (performance.now() - this.perf) * 1000 * this.speed;
  }

  anchor(wall) {
    this.wall = wall;
    this.perf = performance.now();
  }

  seek(us) {
    this.anchor(Math.round(us));
    this.tick();
  }

  play() {
    if (this.wall >= nowUs() - LIVE_EDGE_US) this.anchor(nowUs() - 60e6);
    this.anchor(this.now());
    this.running = true;
    this.tick();
  }

  pause() {
    this.anchor(this.now());
    this.running = false;
    this.tick();
  }

  setSpeed(speed) {
    this.anchor(this.now());
    this.speed = speed;
    this.tick();
  }

  /** A frame forward (+1) or back (-1), paused: the lead's frame, the others to its time. */
  step(dir) {
    if (this.running) this.pause();
    const lead = this.players().find((p) => p.wallNow() !== null);
    const next = lead ? lead.frameAway(dir) : null;
    if (!next) {
      this.seek(this.wall + dir * (lead ? lead.frame : FRAME_S) * 1e6);
      return;
    }
    lead.video.currentTime = next.m;
    this.anchor(next.w);
    this.tick();
  }

  tick() {
    const players = this.players();
    let w = this.now();
    const lead = this.running ? players.find((p) => p.playing()) : null;
    if (lead) {
      const at = lead.wallNow();
      if (at !== null) this.anchor(at);
    } else if (this.running && players.some((p) => p.waiting(w))) {
      this.anchor(this.wall); // hold: someone is loading or waiting for data
    } else if (!this.running && !players.length) {
      this.anchor(w);
    }
    w = this.now();
    if (this.running && w >= nowUs() - LIVE_EDGE_US) {
      this.running = false;
      this.anchor(Math.min(w, nowUs() - LIVE_EDGE_US));
      this.onEdge();
      w = this.wall;
    }
    const drift = this.running ? DRIFT_S : 0.02;
    for (const p of players) {
      p.follow(w, { playing: this.running, speed: this.speed, trick: this.trick,
        lead: p === lead, drift });  // prettier-ignore
    }
    this.onTime(w, this.running);
  }

  destroy() {
    clearInterval(this.timer);
  }
}
