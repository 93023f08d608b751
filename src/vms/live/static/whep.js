// Live view over WebRTC through WHEP (RFC 9725): registers window.vmsPlayers.webrtc.
//
//   const stop = await window.vmsPlayers.webrtc(video, {camera, stream, token, base});
//   ...
//   await stop();   // DELETE on the session's resource, then the connection closes
//
// The server sends the camera's H.264 as it is (and its G.711 audio, when it has some); it
// does not trickle ICE, so the offer goes out with every candidate gathered. stop.pc is the
// RTCPeerConnection (getStats); the video element gets "vms-state" events (detail: the
// connection's state).
(function () {
  "use strict";
  const players = (window.vmsPlayers = window.vmsPlayers || {});
  const GATHER_MS = 3000; // past this, offer the candidates gathered so far

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

  async function failure(response) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.message) message = body.message;
    } catch (e) {
      // not the API's error body: keep the status
    }
    return new Error(`WebRTC: ${message}`);
  }

  players.webrtc = async (video, { camera, stream = "main", token = "", base = "" }) => {
    const query = new URLSearchParams({ stream });
    if (token) query.set("token", token);
    const url = new URL(`${base}/api/v1/cameras/${encodeURIComponent(camera)}/whep?${query}`,
                        window.location.href).href;
    const pc = new RTCPeerConnection();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const media = new MediaStream();
    pc.addEventListener("track", (event) => media.addTrack(event.track));
    pc.addEventListener("connectionstatechange", () =>
      video.dispatchEvent(new CustomEvent("vms-state", { detail: pc.connectionState })));
    let resource = null;
    let stopped = false;
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      if (resource) {
        try {
          await fetch(resource, { method: "DELETE" });
        } catch (e) {
          // the server ends a session whose peer is gone by itself (ICE consent)
        }
      }
      pc.close();
      if (video.srcObject === media) video.srcObject = null;
    };
    stop.pc = pc;
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/sdp" },
        body: pc.localDescription.sdp,
      });
      if (response.status !== 201) throw await failure(response);
      resource = new URL(response.headers.get("Location"), url).href;
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    } catch (e) {
      await stop();
      throw e;
    }
    video.srcObject = media;
    video.play().catch(() => {}); // muted autoplay; a page with sound asks for a gesture
    return stop;
  };
})();
