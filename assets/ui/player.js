// Plays one channel's HLS output in the page's <video> through hls.js (bundled in Amps),
// or natively where Media Source Extensions are missing (iPhone). The status line says
// what happens.
"use strict";
(function () {
  const video = document.getElementById("player");
  const status = document.getElementById("player-status");
  if (!video) return;
  const src = video.dataset.src;
  const say = (text, state) => {
    status.textContent = text;
    document.body.dataset.player = state;
  };
  const live = video.dataset.kind !== "catchup";
  video.addEventListener("playing", () =>
    say(live ? "Playing (live)." : "Playing from the archive.", "playing"));
  video.addEventListener("waiting", () => say("Buffering…", "waiting"));
  video.addEventListener("error", () => say("The browser cannot play this channel.", "error"));
  // hls.js (Media Source Extensions) first, as its authors advise; the browser's own HLS
  // where MSE is missing (iPhone Safari), or when the page is opened with ?player=native.
  const native = video.canPlayType("application/vnd.apple.mpegurl") !== "";
  const wantNative = new URLSearchParams(location.search).get("player") === "native";
  document.body.dataset.engine = "none";
  if (native && wantNative) {
    document.body.dataset.engine = "native";
    video.src = src;
  } else if (window.Hls && window.Hls.isSupported()) {
    document.body.dataset.engine = "hls.js";
    // A catch-up window plays from its start, even while it still reaches live (EVENT).
    const hls = new window.Hls({
      liveSyncDurationCount: 3,
      enableWorker: true,
      startPosition: live ? -1 : 0,
    });
    window.amps = { hls };
    hls.on(window.Hls.Events.ERROR, (_, data) => {
      if (!data.fatal) return;
      if (data.type === window.Hls.ErrorTypes.NETWORK_ERROR) {
        say("Network error; retrying…", "retrying");
        setTimeout(() => hls.startLoad(), 2000);
      } else if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) {
        say("Media error; recovering…", "retrying");
        hls.recoverMediaError();
      } else {
        say("The browser cannot play this channel: " + data.details, "error");
        hls.destroy();
      }
    });
    hls.loadSource(src);
    hls.attachMedia(video);
  } else if (native) {
    document.body.dataset.engine = "native";
    video.src = src;
  } else {
    say("This browser cannot play HLS; use the links below in VLC or mpv.", "error");
  }
  video.play().catch(() => say("Press play to start.", "paused"));
})();
