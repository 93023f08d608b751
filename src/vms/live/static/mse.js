// Live view over a WebSocket into Media Source Extensions (the server side: vms/live/mse.py).
//
// Messages: JSON {"type": "init", mime, ...} then the init segment (binary): a new MediaSource
// (the stream restarted, maybe with other parameters); then fragments (binary) to append;
// {"type": "offline", since} / {"type": "error", message}.
//
// The traps: a SourceBuffer takes one append at a time (queue while it is updating); the
// server skips a slow viewer ahead to the next keyframe, leaving a hole in the buffer that the
// video element does not jump by itself; and a live buffer grows without end unless trimmed.
(() => {
  "use strict";
  const MAX_BEHIND_S = 1.5; // further behind the live edge than this: seek to it
  const EDGE_S = 0.1; // where to seek: this far before the end of what is buffered
  // Between the two, play a little faster until back near the edge (no jump in the picture).
  const CATCH_UP_S = 0.3;
  const CATCH_UP_RATE = 1.1;
  const KEEP_S = 10; // buffered media kept behind the playing position
  const RETRY_MS = 1000;

  async function play(video, opts) {
    const onState = opts.onState || (() => {});
    const onLatency = opts.onLatency || (() => {});
    let ws = null;
    let source = null; // {ms, sb, queue, url, started}: the MediaSource of the current init
    let stopped = false;
    let retry = null;
    let shown = false; // a frame of the current stream has been shown

    function reset() {
      if (source) {
        URL.revokeObjectURL(source.url);
        source = null;
      }
      video.removeAttribute("src");
      video.load();
    }

    function open(mime) {
      reset();
      if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) {
        onState("error", `this browser cannot play ${mime}`);
        return;
      }
      const ms = new MediaSource();
      // started: the first media is in and the video was put at its live edge: a new viewer
      // gets the GOP so far first (the picture at once), then it must not play it through.
      const s = { ms, sb: null, queue: [], url: URL.createObjectURL(ms), started: false };
      source = s;
      shown = false;
      ms.addEventListener("sourceopen", () => {
        if (source !== s) return;
        s.sb = ms.addSourceBuffer(mime);
        s.sb.mode = "segments"; // each fragment's own decode time (tfdt) places it
        s.sb.addEventListener("updateend", () => {
          if (!s.started) keepUp(); // the first media: to the live edge at once
          pump();
        });
        pump();
      }, { once: true });
      video.src = s.url;
    }

    function pump() {
      const s = source;
      if (!s || !s.sb || s.sb.updating || s.ms.readyState !== "open") return;
      const b = s.sb.buffered;
      if (b.length && video.currentTime - b.start(0) > 2 * KEEP_S) {
        s.sb.remove(0, video.currentTime - KEEP_S);
        return; // updateend comes back here
      }
      if (!s.queue.length) return;
      const parts = s.queue.splice(0);
      const size = parts.reduce((n, p) => n + p.byteLength, 0);
      const data = new Uint8Array(size);
      let at = 0;
      for (const p of parts) { data.set(new Uint8Array(p), at); at += p.byteLength; }
      try {
        s.sb.appendBuffer(data);
      } catch (e) {
        // QuotaExceededError (or a source that broke): start again on a new connection.
        onState("error", e.message);
        ws && ws.close();
      }
    }

    function keepUp() {
      // Stay near the live edge; step over holes the server's skips left; say how far behind.
      const s = source;
      if (!s || !s.sb) return;
      const b = s.sb.buffered;
      if (!b.length) return;
      const end = b.end(b.length - 1);
      const t = video.currentTime;
      let inside = false;
      for (let i = 0; i < b.length; i++) if (b.start(i) <= t && t < b.end(i)) inside = true;
      if (!s.started || end - t > MAX_BEHIND_S || (!inside && t < b.start(b.length - 1))) {
        video.currentTime = Math.max(b.start(b.length - 1), end - EDGE_S);
        s.started = true;
      }
      const behind = end - video.currentTime;
      if (behind > CATCH_UP_S) video.playbackRate = CATCH_UP_RATE;
      else if (behind < EDGE_S * 1.5) video.playbackRate = 1;
      if (video.paused) video.play().catch(() => {});
      onLatency(Math.max(0, behind));
    }
    const timer = setInterval(keepUp, 250);

    // "live" once a frame of the current stream is shown.
    const shownNow = () => {
      if (!stopped && !shown && source) { shown = true; onState("live"); }
    };
    const onFrame = () => {
      shownNow();
      if (!stopped) video.requestVideoFrameCallback(onFrame);
    };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);
    else video.addEventListener("timeupdate", shownNow);

    async function connect() {
      if (stopped) return;
      onState(ws ? "reconnecting" : "connecting");
      let token;
      try {
        token = await opts.mediaToken("live");
      } catch (e) {
        onState("reconnecting", e.message);
        retry = setTimeout(connect, RETRY_MS);
        return;
      }
      if (stopped) return;
      const url = new URL(`/api/v1/cameras/${encodeURIComponent(opts.camera)}/live.ws`, opts.base);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      url.search = new URLSearchParams({ stream: opts.stream, token }).toString();
      const sock = new WebSocket(url);
      ws = sock;
      sock.binaryType = "arraybuffer";
      sock.onmessage = (ev) => {
        if (typeof ev.data !== "string") {
          if (source) { source.queue.push(ev.data); pump(); }
          return;
        }
        const msg = JSON.parse(ev.data);
        if (msg.type === "init") open(msg.mime);
        else if (msg.type === "offline") onState("offline", msg.since);
        else if (msg.type === "error") onState("error", msg.message);
      };
      sock.onclose = () => {
        if (stopped || ws !== sock) return;
        onState("reconnecting");
        retry = setTimeout(connect, RETRY_MS);
      };
    }

    await connect();
    return async () => {
      stopped = true;
      clearInterval(timer);
      clearTimeout(retry);
      if (ws) ws.close();
      reset();
    };
  }

  (window.vmsPlayers = window.vmsPlayers || {}).mse = play;
})();
