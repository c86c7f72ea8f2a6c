// Keeps the dashboard current: every few seconds, fetch the page again and swap in the
// channel list and the summary line. Nothing else runs; without JavaScript the page is
// the same, just not refreshed.
"use strict";
(function () {
  const main = document.getElementById("channels");
  if (!main) return;
  const every = 1000 * (parseInt(main.dataset.refresh, 10) || 5);
  async function refresh() {
    if (document.hidden) return;
    try {
      const resp = await fetch(location.pathname, {
        headers: { Accept: "text/html" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (resp.status === 401) { location.reload(); return; }
      if (!resp.ok) return;
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      const next = doc.getElementById("channels");
      const summary = doc.getElementById("summary");
      if (next) main.replaceChildren(...next.childNodes);
      if (summary) document.getElementById("summary").replaceWith(summary);
      document.body.dataset.refreshed = String(Date.now());
    } catch (e) {
      // The server restarting: try again next time.
    }
  }
  setInterval(refresh, every);
})();
