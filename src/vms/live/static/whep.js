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
//
// Before its offer it asks the server for the STUN and TURN servers to gather with
// (GET /api/v1/live/ice-servers, with its media token): the offer carries every candidate.
//
// opts.stream: "main", "sub" or "auto" (the default): as over MSE, the player switches
// between the camera's streams on the data channel ({"type": "select", stream}; the server
// answers {"type": "state", stream, switching?, streams}) by the picture's size and the
// delivery getStats measures (abr.js); stop.select(s) changes the choice while playing,
// stop.rendition is the stream played.
(() => {
  "use strict";
  const GATHER_MS = 3000; // past this, offer the candidates gathered so far
  const RETRY_MS = 2000;
  const STATS_MS = 1000;
  const DELETE_MS = 3000; // a server that does not answer: close anyway
  // Delivery falls behind: this part of the video's packets lost over a second, or frames
  // held this long in the jitter buffer.
  const LOSS = 0.05;
  const BUFFER_S = 1.0;

  // The STUN and TURN servers to gather with; none when the server cannot say (the offer
  // then has host candidates only, which a viewer on the server's network needs no more than).
  async function iceServers(opts, token) {
    const query = new URLSearchParams({ camera_id: opts.camera });
    if (token) query.set("token", token);
    const url = new URL(`/api/v1/live/ice-servers?${query}`, opts.base || location.href);
    try {
      const r = await fetch(url, { cache: "no-store" });
      if (r.ok) return (await r.json()).ice_servers;
    } catch (e) {
      // none, then
    }
    return [];
  }

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
    const onRendition = opts.onRendition || (() => {});
    const mediaToken = opts.mediaToken || (async () => opts.token || "");
    const abr = window.vmsAbr;
    const chooser = abr ? abr.chooser() : null;
    let auto = !opts.stream || opts.stream === "auto";
    let want = opts.stream === "sub" ? "sub" : "main"; // the stream asked for
    let rendition = null; // the stream played, as the server says
    let facts = { has: {}, main: 0, aspect: 0 };
    const refused = {};
    let session = null; // {pc, media, resource, closed, timer, last, channel, behind}
    let stopped = false;
    let retry = null;
    let shown = false; // a frame of the current connection has been shown
    // The camera said offline on this connection and not yet online: the frames still in the
    // jitter buffer when the message comes are shown after it, and must not say "live".
    let away = false;
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
      s.last = { delay: rtp.jitterBufferDelay, count: rtp.jitterBufferEmittedCount,
                 lost: rtp.packetsLost || 0, received: rtp.packetsReceived || 0 };
      if (!last || rtp.jitterBufferEmittedCount <= last.count) return;
      const buffer = (rtp.jitterBufferDelay - last.delay) / (rtp.jitterBufferEmittedCount - last.count);
      const decode = rtp.framesDecoded ? rtp.totalDecodeTime / rtp.framesDecoded : 0;
      onLatency(buffer + decode + (rtt || 0) / 2);
      const lost = s.last.lost - last.lost;
      const all = lost + s.last.received - last.received;
      s.behind = (all > 0 && lost / all > LOSS) || buffer > BUFFER_S;
    }

    function send(stream) {
      const s = session;
      if (s && s.channel && s.channel.readyState === "open") {
        s.channel.send(JSON.stringify({ type: "select", stream }));
        return true;
      }
      return false;
    }

    function choose() {
      const s = session;
      if (!auto || !chooser || !s || !shown || video.srcObject !== s.media) return;
      const now = performance.now();
      const has = { main: facts.has.main && !refused.main, sub: facts.has.sub && !refused.sub };
      const next = chooser.decide({
        now, current: want, shown: abr.shownWidth(video, facts.aspect), main: facts.main,
        behind: !!s.behind, has,
      });
      if (next && next !== want && send(next)) {
        chooser.chose(now);
        want = next;
      }
    }

    function played(stream) {
      if (stream && stream !== rendition) {
        rendition = stream;
        onRendition(stream, auto);
      }
    }

    async function connect() {
      if (stopped) return;
      if (tries++ === 0) onState("connecting"); // later tries keep what again() said
      let token;
      try {
        token = await mediaToken("live");
      } catch (e) {
        again("reconnecting", e.message);
        return;
      }
      const servers = await iceServers(opts, token);
      if (stopped) return;
      const pc = new RTCPeerConnection({ iceServers: servers });
      const s = { pc, media: new MediaStream(), resource: null, closed: false, timer: null,
                  channel: null, behind: false };
      session = s;
      shown = false;
      away = false;
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addEventListener("track", (event) => s.media.addTrack(event.track));
      const channel = pc.createDataChannel("vms");
      s.channel = channel;
      channel.addEventListener("message", (event) => {
        const msg = JSON.parse(event.data);
        if (msg.type === "offline") {
          shown = false;
          away = true;
          onState("offline", msg.since);
        } else if (msg.type === "online") {
          away = false;
          onState("connecting");
        } else if (msg.type === "state") {
          if (msg.streams && abr) facts = abr.facts(msg.streams);
          if (!msg.switching) played(msg.stream);
        } else if (msg.type === "error" && msg.stream) {
          refused[msg.stream] = true; // a select the server cannot do: the session goes on
          if (want === msg.stream) want = rendition || want;
        }
      });
      pc.addEventListener("connectionstatechange", () => {
        const state = pc.connectionState;
        if (session === s && (state === "failed" || state === "closed")) {
          again("reconnecting", `the connection ${state}`);
        }
      });
      try {
        await pc.setLocalDescription(await pc.createOffer());
        await gathered(pc);
        if (s.closed) return;
        const query = new URLSearchParams({ stream: want });
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
      s.timer = setInterval(() => latency(s).then(choose).catch(() => {}), STATS_MS);
    }

    // "live" once a frame of the current connection is shown.
    const onFrame = () => {
      if (stopped) return;
      if (!shown && !away && session && video.srcObject === session.media) {
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
    // Play "main", "sub", or "auto" from now on, on the same connection.
    stop.select = (stream) => {
      auto = stream === "auto";
      if (auto || stream === want) return;
      want = stream; // also what a new connection asks for
      if (chooser) chooser.chose(performance.now());
      send(stream);
    };
    Object.defineProperty(stop, "rendition", { get: () => rendition });
    return stop;
  }

  (window.vmsPlayers = window.vmsPlayers || {}).webrtc = play;
})();
