// Live view over a WebSocket into Media Source Extensions (the server side: vms/live/mse.py).
//
// Messages: JSON {"type": "init", mime, stream, streams, switch?} then the init segment
// (binary): a new MediaSource (the stream restarted, maybe with other parameters), or, with
// switch, the same SourceBuffer (the viewer was switched to the camera's other stream: its
// decode times go on from the old one's); then fragments (binary) to append;
// {"type": "state", stream, switching?}; {"type": "offline", since} / {"type": "error",
// message, stream?} (with stream: a select refused, the feed goes on).
//
// opts.stream: "main", "sub", or "auto" (the default): the player switches by the tile's size
// and the delivery it measures (abr.js), sending {"type": "select", stream}. stop.select(s)
// changes that while playing; stop.rendition is the stream being played.
//
// The traps: a SourceBuffer takes one append at a time (queue while it is updating), and a
// new init segment with other codecs needs changeType() first, in the order of the appends;
// the server skips a slow viewer ahead to the next keyframe, leaving a hole in the buffer that
// the video element does not jump by itself; a switch puts the new stream's current GOP after
// what is buffered, so the player seeks to its live edge as it does at a start; and a live
// buffer grows without end unless trimmed.
(() => {
  "use strict";
  const MAX_BEHIND_S = 1.5; // further behind the live edge than this: seek to it
  const EDGE_S = 0.1; // where to seek: this far before the end of what is buffered
  // Between the two, play a little faster until back near the edge (no jump in the picture).
  const CATCH_UP_S = 0.3;
  const CATCH_UP_RATE = 1.1;
  const KEEP_S = 10; // buffered media kept behind the playing position
  const RETRY_MS = 1000;
  // Delivery falls behind when the media arrives this much later than it did at best over the
  // last LAG_WINDOW_MS (wall time less the buffered end: a one-way delay, up to a constant).
  const LAG_S = 1.0;
  const LAG_WINDOW_MS = 30000;
  const CHOOSE_MS = 500; // how often the automatic choice is looked at

  async function play(video, opts) {
    const onState = opts.onState || (() => {});
    const onLatency = opts.onLatency || (() => {});
    const onRendition = opts.onRendition || (() => {});
    const abr = window.vmsAbr;
    let auto = !opts.stream || opts.stream === "auto";
    let want = opts.stream === "sub" ? "sub" : "main"; // the stream asked for
    let rendition = null; // the stream played
    let facts = { has: {}, main: 0, aspect: 0 };
    const refused = {}; // streams a select of was refused
    const chooser = abr ? abr.chooser() : null;
    let ws = null;
    let source = null; // {ms, sb, mime, queue, url, started, jumpFrom}: of the current init
    let stopped = false;
    let retry = null;
    let shown = false; // a frame of the current stream has been shown
    let online = false; // the camera's stream is flowing (no offline since the last init)
    let lag = []; // [wall ms, wall s less the buffered end]

    function reset() {
      if (source) {
        URL.revokeObjectURL(source.url);
        source = null;
      }
      lag = [];
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
      const s = { ms, sb: null, mime, queue: [], url: URL.createObjectURL(ms), started: false,
                  jumpFrom: null };
      source = s;
      shown = false;
      ms.addEventListener("sourceopen", () => {
        if (source !== s) return;
        s.sb = ms.addSourceBuffer(mime);
        s.sb.mode = "segments"; // each fragment's own decode time (tfdt) places it
        s.sb.addEventListener("updateend", () => {
          if (!s.started || s.jumpFrom !== null) keepUp(); // to the live edge at once
          pump();
        });
        pump();
      }, { once: true });
      video.src = s.url;
    }

    // A switch of stream: the next init segment goes to the same SourceBuffer, after a
    // changeType to its codecs; false when that cannot be done (a new MediaSource then).
    function switchTo(mime) {
      const s = source;
      if (!s || !s.sb || s.ms.readyState !== "open") return false;
      if (mime !== s.mime && !(s.sb.changeType && MediaSource.isTypeSupported(mime))) return false;
      s.queue.push({ mime });
      const b = s.sb.buffered;
      s.jumpFrom = b.length ? b.end(b.length - 1) : 0;
      lag = []; // the replayed GOP arrives at once: a new reference
      return true;
    }

    function pump() {
      const s = source;
      if (!s || !s.sb || s.sb.updating || s.ms.readyState !== "open") return;
      const b = s.sb.buffered;
      if (b.length && video.currentTime - b.start(0) > 2 * KEEP_S) {
        s.sb.remove(0, video.currentTime - KEEP_S);
        return; // updateend comes back here
      }
      try {
        while (s.queue.length && s.queue[0].mime) {
          const { mime } = s.queue.shift();
          if (mime !== s.mime) s.sb.changeType(mime);
          s.mime = mime;
        }
        if (!s.queue.length) return;
        const upTo = s.queue.findIndex((p) => p.mime);
        const parts = s.queue.splice(0, upTo < 0 ? s.queue.length : upTo);
        const size = parts.reduce((n, p) => n + p.byteLength, 0);
        const data = new Uint8Array(size);
        let at = 0;
        for (const p of parts) { data.set(new Uint8Array(p), at); at += p.byteLength; }
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
      // After a switch, once the new stream's media is in: to its live edge.
      const switched = s.jumpFrom !== null && end > s.jumpFrom + EDGE_S;
      if (!s.started || switched || end - t > MAX_BEHIND_S ||
          (!inside && t < b.start(b.length - 1))) {
        video.currentTime = Math.max(b.start(b.length - 1), end - EDGE_S);
        s.started = true;
        if (switched) s.jumpFrom = null;
      }
      const behind = end - video.currentTime;
      if (behind > CATCH_UP_S) video.playbackRate = CATCH_UP_RATE;
      else if (behind < EDGE_S * 1.5) video.playbackRate = 1;
      if (video.paused) video.play().catch(() => {});
      onLatency(Math.max(0, behind));
      if (s.jumpFrom === null) {
        const now = performance.now();
        lag.push([now, now / 1000 - end]);
        while (lag.length && lag[0][0] < now - LAG_WINDOW_MS) lag.shift();
      }
    }
    const timer = setInterval(keepUp, 250);

    // Delivery falls behind: the media arrives later and later (the network, or this machine,
    // does not keep up with the stream's rate).
    function fallingBehind() {
      if (lag.length < 4) return false;
      let best = Infinity;
      for (const [, d] of lag) best = Math.min(best, d);
      return lag[lag.length - 1][1] - best > LAG_S;
    }

    function send(stream) {
      if (ws && ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ type: "select", stream }));
      }
    }

    function choose() {
      if (!auto || !chooser || !source || !shown || !online) return;
      const now = performance.now();
      const has = { main: facts.has.main && !refused.main, sub: facts.has.sub && !refused.sub };
      const next = chooser.decide({
        now, current: want, shown: abr.shownWidth(video, facts.aspect), main: facts.main,
        behind: fallingBehind(), has,
      });
      if (next && next !== want) {
        chooser.chose(now);
        want = next;
        send(want);
      }
    }
    const chooseTimer = setInterval(choose, CHOOSE_MS);

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

    function played(stream) {
      if (stream && stream !== rendition) {
        rendition = stream;
        onRendition(stream, auto);
      }
    }

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
      url.search = new URLSearchParams({ stream: want, token }).toString();
      const sock = new WebSocket(url);
      ws = sock;
      sock.binaryType = "arraybuffer";
      sock.onmessage = (ev) => {
        if (typeof ev.data !== "string") {
          if (source) { source.queue.push(ev.data); pump(); }
          return;
        }
        const msg = JSON.parse(ev.data);
        if (msg.type === "init") {
          if (msg.streams) facts = abr ? abr.facts(msg.streams) : facts;
          if (!(msg.switch && switchTo(msg.mime))) open(msg.mime);
          online = true;
          played(msg.stream);
        } else if (msg.type === "state") {
          if (!msg.switching) played(msg.stream);
        } else if (msg.type === "offline") {
          online = false;
          onState("offline", msg.since);
        } else if (msg.type === "error" && msg.stream) {
          refused[msg.stream] = true; // a select the server cannot do: the feed goes on
          if (want === msg.stream) want = rendition || want;
        } else if (msg.type === "error") {
          onState("error", msg.message);
        }
      };
      sock.onclose = () => {
        if (stopped || ws !== sock) return;
        onState("reconnecting");
        retry = setTimeout(connect, RETRY_MS);
      };
    }

    await connect();
    const stop = async () => {
      stopped = true;
      clearInterval(timer);
      clearInterval(chooseTimer);
      clearTimeout(retry);
      if (ws) ws.close();
      reset();
    };
    // Play "main", "sub", or "auto" from now on, without reconnecting.
    stop.select = (stream) => {
      auto = stream === "auto";
      if (auto || stream === want) return;
      want = stream;
      if (chooser) chooser.chose(performance.now());
      send(stream);
    };
    Object.defineProperty(stop, "rendition", { get: () => rendition });
    return stop;
  }

  (window.vmsPlayers = window.vmsPlayers || {}).mse = play;
})();
