// Live view over WebRTC through WHEP (draft-ietf-wish-whep, the viewer's side of WHIP,
// RFC 9725); the server side: vms/live/webrtc.py.
//
// window.vmsPlayers.webrtc(video, opts) -> stop, as player.js describes the contract. The
// offer goes out with every candidate gathered (the server does not trickle), asks for video
// (the camera's H.264, as it is) and audio (the camera's G.711, when it has some), and opens a
// data channel on which the server says {"type": "offline", since} / {"type": "online"} as
// the camera goes and comes back; the session stays up meanwhile. A connection that fails or
// is closed by the server (camera removed or changed) is made again, until stop().
// stop.pc is the current RTCPeerConnection (getStats), for tests and benchmarks.
(() => {
  "use strict";
  const GATHER_MS = 3000; // past this, offer the candidates gathered so far
  const RETRY_MS = 2000;
  const STATS_MS = 1000;
  const DELETE_MS = 3000; // a server that does not answer: close anyway

  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => {
        if (pc.iceGatheringState === "complete") done();
      };
      const timer = setTimeout(done, GATHER_MS);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  async function refused(response) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.message) message = body.message;
    } catch (e) {
      // not the API's error body: keep the status
    }
    const error = new Error(message);
    // Worth another try: the camera offline, the server full or starting, a token expired.
    error.retry = response.status >= 500 || response.status === 401;
    error.offline = response.status === 503;
    return error;
  }

  async function play(video, opts) {
    const onState = opts.onState || (() => {});
    const onLatency = opts.onLatency || (() => {});
    const mediaToken = opts.mediaToken || (async () => opts.token || "");
    let session = null; // {pc, media, resource, closed, timer, last}
    let stopped = false;
    let retry = null;
    let shown = false; // a frame of the current connection has been shown
    let tries = 0;

    async function end(s) {
      if (!s || s.closed) return;
      s.closed = true;
      clearInterval(s.timer);
      if (s.resource) {
        try {
          await fetch(s.resource, { method: "DELETE", signal: AbortSignal.timeout(DELETE_MS) });
        } catch (e) {
          // the server ends a session whose peer is gone by itself (ICE consent)
        }
      }
      s.pc.close();
      if (video.srcObject === s.media) video.srcObject = null;
    }

    function again(state, detail) {
      if (stopped) return;
      const s = session;
      session = null;
      end(s);
      onState(state, detail);
      clearTimeout(retry);
      retry = setTimeout(connect, RETRY_MS);
    }

    // What the browser adds, measured by itself: its jitter buffer, its decoding, half the
    // round trip. (The camera's and the server's part is not visible from here.)
    async function latency(s) {
      let rtt = null;
      let rtp = null;
      (await s.pc.getStats()).forEach((r) => {
        if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime != null) {
          rtt = r.currentRoundTripTime;
        }
        if (r.type === "inbound-rtp" && r.kind === "video") rtp = r;
      });
      if (!rtp) return;
      const last = s.last;
      s.last = { delay: rtp.jitterBufferDelay, count: rtp.jitterBufferEmittedCount };
      if (!last || rtp.jitterBufferEmittedCount <= last.count) return;
      const buffer = (rtp.jitterBufferDelay - last.delay) / (rtp.jitterBufferEmittedCount - last.count);
      const decode = rtp.framesDecoded ? rtp.totalDecodeTime / rtp.framesDecoded : 0;
      onLatency(buffer + decode + (rtt || 0) / 2);
    }

    async function connect() {
      if (stopped) return;
      if (tries++ === 0) onState("connecting"); // later tries keep what again() said
      const pc = new RTCPeerConnection();
      const s = { pc, media: new MediaStream(), resource: null, closed: false, timer: null };
      session = s;
      shown = false;
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addEventListener("track", (event) => s.media.addTrack(event.track));
      const channel = pc.createDataChannel("vms");
      channel.addEventListener("message", (event) => {
        const msg = JSON.parse(event.data);
        if (msg.type === "offline") {
          shown = false;
          onState("offline", msg.since);
        } else if (msg.type === "online") {
          onState("connecting");
        }
      });
      pc.addEventListener("connectionstatechange", () => {
        const state = pc.connectionState;
        if (session === s && (state === "failed" || state === "closed")) {
          again("reconnecting", `the connection ${state}`);
        }
      });
      try {
        const token = await mediaToken("live");
        await pc.setLocalDescription(await pc.createOffer());
        await gathered(pc);
        if (s.closed) return;
        const query = new URLSearchParams({ stream: opts.stream || "main" });
        if (token) query.set("token", token);
        const camera = encodeURIComponent(opts.camera);
        const url = new URL(`/api/v1/cameras/${camera}/whep?${query}`, opts.base || location.href);
        const response = await fetch(url, {
          method: "POST",
          headers: { "Content-Type": "application/sdp" },
          body: pc.localDescription.sdp,
        });
        if (response.status !== 201) throw await refused(response);
        s.resource = new URL(response.headers.get("Location"), url).href;
        if (s.closed) {
          // stopped while the offer was out: the session made meanwhile goes too
          fetch(s.resource, { method: "DELETE" }).catch(() => {});
          return;
        }
        await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
      } catch (e) {
        if (s.closed || stopped) return;
        if (e.retry === false) {
          session = null;
          end(s);
          onState("error", e.message);
          return;
        }
        again(e.offline ? "offline" : "reconnecting", e.message);
        return;
      }
      video.srcObject = s.media;
      video.play().catch(() => {}); // muted autoplay; sound needs a gesture on the page
      s.timer = setInterval(() => latency(s).catch(() => {}), STATS_MS);
    }

    // "live" once a frame of the current connection is shown.
    const onFrame = () => {
      if (stopped) return;
      if (!shown && session && video.srcObject === session.media) {
        shown = true;
        onState("live");
      }
      video.requestVideoFrameCallback(onFrame);
    };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);

    await connect();
    const stop = async () => {
      stopped = true;
      clearTimeout(retry);
      const s = session;
      session = null;
      await end(s);
    };
    Object.defineProperty(stop, "pc", { get: () => (session ? session.pc : null) });
    return stop;
  }

  (window.vmsPlayers = window.vmsPlayers || {}).webrtc = play;
})();
