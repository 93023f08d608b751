// Live view over LL-HLS (the server side: vms/live/hls.py, vms/api/live_hls.py): hls.js in
// low-latency mode on the camera's multivariant playlist (…/live/master.m3u8), or Safari's
// own HLS where there is no MediaSource. Registers window.vmsPlayers.llhls (player.js has the
// contract): opts.mediaToken("live") gives the token for the playlist's URL (its answer's URIs
// carry a token of their own for the session); without it, hls.js sends opts.token as a
// bearer header. stream "main" or "sub" pins that variant, "auto" lets hls.js switch by
// bandwidth.
//
// The traps: a playlist that answers 503 (the camera went offline) is retried by hls.js
// itself, so "offline" is reported from its non-fatal errors and "live" again from the next
// part buffered; a fatal error (retries spent, the token expired) starts a new hls.js with a
// new token. hls.js plays PART-HOLD-BACK behind the newest part and adds a second for each
// stall; maxLiveSyncPlaybackRate lets it catch up with such a longer target (it speeds up
// only with more than a second buffered ahead).
//
// stop.stats() -> {latency, behind, target, stalls, level, stream}: latency is now minus the
// wall time of the frame shown (EXT-X-PROGRAM-DATE-TIME: when the server received it), behind
// is hls.js's distance to the live edge, target the distance it aims at; all in seconds.
(() => {
  "use strict";
  const RETRY_MS = 2000;
  const SYNC_S = 0.1; // behind hls.js's sync position by more than this at the start: jump
  const players = (window.vmsPlayers = window.vmsPlayers || {});
  let loading = null;

  function loadHlsJs(base) {
    if (window.Hls) return Promise.resolve(window.Hls);
    if (!loading) {
      loading = new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = `${base}/live/static/vendor/hls.min.js`;
        s.onload = () => (window.Hls ? resolve(window.Hls) : reject(new Error("hls.js did not load")));
        s.onerror = () => {
          loading = null;
          reject(new Error(`cannot load ${s.src}`));
        };
        document.head.appendChild(s);
      });
    }
    return loading;
  }

  function levelStream(level) {
    const urls = level ? [].concat(level.url || level.uri || []) : [];
    return urls.join(" ").includes("stream=sub") ? "sub" : "main";
  }

  players.llhls = async (video, opts) => {
    const { camera, stream = "main", token, base = "", mediaToken } = opts;
    const onState = opts.onState || (() => {});
    const onLatency = opts.onLatency || (() => {});
    const master = (media) => {
      const q = media ? `?token=${encodeURIComponent(media)}` : "";
      return `${base}/api/v1/cameras/${encodeURIComponent(camera)}/live/master.m3u8${q}`;
    };
    let Hls = null;
    try {
      Hls = await loadHlsJs(base);
    } catch (e) {
      if (!video.canPlayType("application/vnd.apple.mpegurl")) throw e;
    }
    if (!Hls || !Hls.isSupported()) return nativeHls(video, opts, master);

    let hls = null;
    let stopped = false;
    let retry = null;
    let stalls = 0;
    let state = "";
    const say = (s, detail = "") => {
      if (s !== state || s === "error") onState(s, detail);
      state = s;
    };

    // hls.js starts where the live edge was when it chose, and the edge has moved on by the
    // time the first part is in; it catches up only with more than a second buffered ahead,
    // which a PART-HOLD-BACK of one second never leaves. So the first parts in put the video
    // at hls.js's own sync position, once.
    let synced = false;
    function toEdge(h) {
      const to = h.liveSyncPosition;
      if (synced || video.readyState < 2 || to == null) return;
      synced = true;
      const b = video.buffered;
      for (let i = 0; i < b.length; i++) {
        if (b.start(i) <= to && to < b.end(i) && to - video.currentTime > SYNC_S) video.currentTime = to;
      }
    }

    function teardown() {
      if (hls) hls.destroy();
      hls = null;
    }

    function again(why) {
      teardown();
      synced = false;
      if (stopped) return;
      say(why === "offline" ? "offline" : "reconnecting", why === "offline" ? "" : why);
      clearTimeout(retry);
      retry = setTimeout(start, RETRY_MS);
    }

    async function start() {
      if (stopped) return;
      if (state !== "offline") say("connecting");
      let media = null;
      try {
        if (mediaToken) media = await mediaToken("live");
      } catch (e) {
        return again(e.message);
      }
      if (stopped) return;
      const h = (hls = new Hls({
        lowLatencyMode: true,
        backBufferLength: 4,
        liveDurationInfinity: true,
        maxLiveSyncPlaybackRate: 1.5,
        // A blocking playlist request may be held up to three target durations (6 s).
        playlistLoadPolicy: {
          default: {
            maxTimeToFirstByteMs: 10000, maxLoadTimeMs: 20000,
            timeoutRetry: { maxNumRetry: 4, retryDelayMs: 0, maxRetryDelayMs: 0 },
            errorRetry: { maxNumRetry: 8, retryDelayMs: 1000, maxRetryDelayMs: 8000 },
          },
        },
        xhrSetup: media ? undefined : (xhr) => xhr.setRequestHeader("Authorization", `Bearer ${token}`),
      }));
      h.on(Hls.Events.ERROR, (_e, data) => {
        if (h !== hls) return;
        if (data.details === Hls.ErrorDetails.BUFFER_STALLED_ERROR) stalls++;
        const code = data.response && data.response.code;
        if (!data.fatal) {
          if (code === 503) say("offline");
          return;
        }
        if (code === 403 || code === 404) {
          teardown();
          say("error", `${data.details} (HTTP ${code})`);
          return;
        }
        again(code === 503 ? "offline" : `${data.details}${code ? ` (HTTP ${code})` : ""}`);
      });
      h.on(Hls.Events.MANIFEST_PARSED, (_e, d) => {
        if (stream === "auto") return;
        const want = d.levels.findIndex((l) => levelStream(l) === stream);
        if (want >= 0) h.currentLevel = want; // pinned: no automatic switching
      });
      h.on(Hls.Events.FRAG_BUFFERED, () => {
        say("live");
        toEdge(h);
      });
      h.loadSource(master(media));
      h.attachMedia(video);
      video.play().catch(() => {}); // muted autoplay; otherwise the page's play button
    }

    const clock = setInterval(() => {
      const d = hls && hls.playingDate;
      if (d && !video.paused) onLatency((Date.now() - d.getTime()) / 1000);
    }, 1000);
    await start();

    const stop = async () => {
      stopped = true;
      clearInterval(clock);
      clearTimeout(retry);
      teardown();
      video.removeAttribute("src");
      video.load();
    };
    stop.stats = () => {
      const d = hls && hls.playingDate;
      return {
        latency: d ? (Date.now() - d.getTime()) / 1000 : null,
        behind: hls && Number.isFinite(hls.latency) ? hls.latency : null,
        target: hls ? hls.targetLatency : null,
        stalls,
        level: hls ? hls.currentLevel : null,
        stream: hls ? levelStream(hls.levels[hls.currentLevel]) : null,
      };
    };
    return stop;
  };

  // Safari: native (LL-)HLS; a media token is required (no header can be set).
  async function nativeHls(video, opts, master) {
    if (!video.canPlayType("application/vnd.apple.mpegurl")) {
      throw new Error("this browser plays no HLS (no MediaSource, no native HLS)");
    }
    const onState = opts.onState || (() => {});
    const onLatency = opts.onLatency || (() => {});
    onState("connecting");
    video.src = master(opts.mediaToken ? await opts.mediaToken("live") : null);
    video.addEventListener("playing", () => onState("live"));
    await video.play().catch(() => {});
    const latency = () => {
      const d = video.getStartDate ? video.getStartDate() : null;
      return d && !isNaN(d.getTime()) ? (Date.now() - d.getTime()) / 1000 - video.currentTime : null;
    };
    const clock = setInterval(() => {
      const s = latency();
      if (s != null) onLatency(s);
    }, 1000);
    const stop = async () => {
      clearInterval(clock);
      video.removeAttribute("src");
      video.load();
    };
    stop.stats = () => ({ latency: latency(), behind: null, target: null, stalls: 0, level: null, stream: opts.stream });
    return stop;
  }
})();
