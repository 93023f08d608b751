// LL-HLS live player: hls.js in low-latency mode on the camera's multivariant playlist
// (GET /api/v1/cameras/{camera}/live/master.m3u8), or Safari's own HLS where hls.js has no
// MediaSource. Registers window.vmsPlayers.llhls (see player.js):
//   const stop = await vmsPlayers.llhls(video, {camera, stream, token, base});
// token: a media token for "live" on this camera (POST /api/v1/auth/media-token); the playlist
// answers with URIs that carry a token of its own for the whole session. stream: "main" or
// "sub" picks that variant and keeps to it; "auto" lets hls.js switch by bandwidth.
// stop.stats() -> {latency, behind, target, stalls, level, stream}: latency is now minus the wall time of the
// frame shown (EXT-X-PROGRAM-DATE-TIME, the server's arrival time of that frame), behind is
// hls.js's own estimate of the distance to the live edge, target what it aims at (it adds to
// PART-HOLD-BACK after each stall); all in seconds.
(() => {
  "use strict";
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

  function masterUrl(camera, token, base) {
    const q = token ? `?token=${encodeURIComponent(token)}` : "";
    return `${base}/api/v1/cameras/${encodeURIComponent(camera)}/live/master.m3u8${q}`;
  }

  players.llhls = async (video, { camera, stream = "main", token, base = "" }) => {
    const url = masterUrl(camera, token, base);
    let Hls = null;
    try {
      Hls = await loadHlsJs(base);
    } catch (e) {
      if (!video.canPlayType("application/vnd.apple.mpegurl")) throw e;
    }
    if (!Hls || !Hls.isSupported()) {
      if (!video.canPlayType("application/vnd.apple.mpegurl")) {
        throw new Error("this browser plays no HLS (no MediaSource, no native HLS)");
      }
      video.src = url; // Safari: native LL-HLS
      await video.play().catch(() => {});
      const stop = async () => {
        video.removeAttribute("src");
        video.load();
      };
      stop.stats = () => {
        const d = video.getStartDate ? video.getStartDate() : null;
        const shown = d && !isNaN(d.getTime()) ? d.getTime() + video.currentTime * 1000 : null;
        return { latency: shown ? (Date.now() - shown) / 1000 : null, behind: null, level: null, stream };
      };
      return stop;
    }

    const hls = new Hls({
      lowLatencyMode: true,
      backBufferLength: 4,
      liveDurationInfinity: true,
      // Catch up (play up to 1.5x) when behind the target latency (PART-HOLD-BACK) rather
      // than staying where the start or a stall left it.
      maxLiveSyncPlaybackRate: 1.5,
      // A blocking playlist request may be held up to three target durations (6 s).
      playlistLoadPolicy: {
        default: {
          maxTimeToFirstByteMs: 10000, maxLoadTimeMs: 20000,
          timeoutRetry: { maxNumRetry: 4, retryDelayMs: 0, maxRetryDelayMs: 0 },
          errorRetry: { maxNumRetry: 8, retryDelayMs: 1000, maxRetryDelayMs: 8000 },
        },
      },
    });
    let stalls = 0;
    const failed = new Promise((_, reject) => {
      hls.on(Hls.Events.ERROR, (_e, data) => {
        if (data.details === Hls.ErrorDetails.BUFFER_STALLED_ERROR) stalls++;
        if (data.fatal) {
          const status = data.response && data.response.code ? ` (HTTP ${data.response.code})` : "";
          video.dispatchEvent(new CustomEvent("vms-error", { detail: `${data.details}${status}` }));
          reject(new Error(`hls.js: ${data.details}${status}`));
        }
      });
    });
    failed.catch(() => {}); // reported through the event once playing
    const parsed = new Promise((resolve) => hls.once(Hls.Events.MANIFEST_PARSED, (_e, d) => resolve(d)));
    hls.loadSource(url);
    hls.attachMedia(video);
    const manifest = await Promise.race([parsed, failed]);
    if (stream !== "auto") {
      const want = manifest.levels.findIndex((l) => (l.url || [l.uri]).join(" ").includes(`stream=${stream}`));
      if (want >= 0) hls.currentLevel = want; // pinned: no automatic switching
    }
    await video.play().catch(() => {}); // muted autoplay; otherwise the page's play button

    const stop = async () => {
      hls.destroy();
      video.removeAttribute("src");
      video.load();
    };
    stop.stats = () => {
      const date = hls.playingDate;
      const level = hls.levels[hls.currentLevel];
      return {
        latency: date ? (Date.now() - date.getTime()) / 1000 : null,
        behind: Number.isFinite(hls.latency) ? hls.latency : null,
        level: hls.currentLevel,
        stalls,
        target: hls.targetLatency,
        stream: level && (level.url || []).join(" ").includes("stream=sub") ? "sub" : "main",
      };
    };
    return stop;
  };
})();
