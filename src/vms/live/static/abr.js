// Which of a camera's streams (its renditions, main and sub) a live player plays when the
// viewer leaves the choice to it ("auto"); shared by the MSE and WebRTC players (mse.js,
// whep.js), which send the server a select and switch at the new stream's keyframe.
//
// window.vmsAbr.chooser() -> {decide(input) -> "main" | "sub" | null, chose(now)}
//   input: {now (ms), current: the stream asked for last, shown: the picture's width on the
//           screen in device pixels (shownWidth), main: main's width, behind: delivery falls
//           behind, has: {main, sub}: which streams the camera runs}
//   null: keep what is asked; after acting on an answer, call chose(now).
//
// The rule: sub when the picture is shown at most SMALL of main's width (main's detail would
// not be seen), or when delivery falls behind on main; main again when it is shown wider than
// BIG of main's width and delivery keeps up, and not sooner than RETRY_MAIN_MS after falling
// behind on it. A choice is held at least HOLD_MS whatever happens: a tile being resized or a
// passing hiccup of the network makes no flapping. The first choice is made at once.
(() => {
  "use strict";
  const SMALL = 0.6;
  const BIG = 0.75; // between the two, the choice stays as it is
  const HOLD_MS = 5000;
  const RETRY_MAIN_MS = 30000;

  function chooser() {
    let since = -Infinity; // when the last choice was made
    let fellBehind = -Infinity; // when delivery last fell behind on main
    return {
      decide({ now, current, shown, main, behind, has }) {
        if (!has || !has.main || !has.sub || !main || !shown) return null;
        if (now - since < HOLD_MS) return null;
        const ratio = shown / main;
        if (current !== "sub") {
          if (behind) {
            fellBehind = now;
            return "sub";
          }
          return ratio <= SMALL ? "sub" : null;
        }
        if (ratio > BIG && !behind && now - fellBehind >= RETRY_MAIN_MS) return "main";
        return null;
      },
      chose(now) {
        since = now;
      },
    };
  }

  // The width the video's picture takes on the screen, in device pixels: the element's,
  // less the bars when the element is taller than the picture (aspect: width / height).
  function shownWidth(video, aspect) {
    const w = video.clientWidth;
    const h = video.clientHeight;
    const width = aspect && h ? Math.min(w, h * aspect) : w;
    return width * (window.devicePixelRatio || 1);
  }

  // The camera's streams as the server gives them ({main: [w, h], sub: [w, h]}): what the
  // chooser needs of them.
  function facts(streams) {
    const main = streams && streams.main;
    return {
      has: { main: !!main, sub: !!(streams && streams.sub) },
      main: main ? main[0] : 0,
      aspect: main && main[1] ? main[0] / main[1] : 0,
    };
  }

  window.vmsAbr = { chooser, shownWidth, facts, SMALL, BIG, HOLD_MS, RETRY_MAIN_MS };
})();
