// Issuing and staff pages: poll the kiosk for the device's progress, show the matching
// panel, and go where the kiosk says when the page must change. No inline script (CSP).
"use strict";
(function () {
  const idle = () => window.kioskIdle || {pause() {}, resume() {}};
  // a form sent (PIN, search, try again) leads the way: a poll answering late must not
  // take the browser elsewhere
  let leaving = false;
  document.addEventListener("submit", () => { leaving = true; }, true);
  window.addEventListener("pagehide", () => { leaving = true; });

  // -- a page that polls: [data-poll] holds the URL, [data-panel] the panels per state
  function poll(root) {
    const url = root.dataset.poll;
    let shown = root.dataset.state;
    let failures = 0;
    const show = (state) => {
      if (state === shown) return;
      const panels = Array.from(root.querySelectorAll("[data-panel]"));
      if (panels.some((panel) => panel.dataset.panel === state)) {
        for (const panel of panels) panel.hidden = panel.dataset.panel !== state;
        shown = state;
        root.dataset.state = state;
      }
      const step = state.startsWith("nfc") ? "nfc" : state.startsWith("print") ? "qr" : null;
      for (const li of root.querySelectorAll("[data-part]")) {
        if (step && li.dataset.part === step) li.classList.add("current");
        else if (li.classList.contains("current")) {
          li.classList.remove("current");
          li.classList.add("made");
        }
      }
    };
    // a customer holding a card still is not idle; a staff login page is
    const pauses = root.dataset.pauseIdle !== "no";
    const go = (next, pause) => {
      if (pauses) idle().resume();
      setTimeout(() => window.location.assign(next), pause);
    };
    if (pauses) idle().pause();
    const tick = () => {
      if (leaving) return;
      fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin",
                  cache: "no-store"})
        .then((r) => r.json())
        .then((body) => {
          if (leaving) return;
          failures = 0;
          if (body.next) {
            const done = body.state === "done";
            if (done) show("done");
            go(body.next, done ? 900 : 0);
            return;
          }
          show(body.state);
          if (body.stop) {
            if (pauses) idle().resume();
            return;
          }
          setTimeout(tick, body.state === "nfc-done" ? 1200 : 300);
        })
        .catch(() => {
          // the kiosk app itself restarting: keep trying, then show the page again
          failures += 1;
          if (failures > 20) go(window.location.href, 0);
          else setTimeout(tick, 1000);
        });
    };
    tick();
  }

  // -- the done screen goes back to the start by itself
  function returnAfter(form) {
    const seconds = Number(form.dataset.returnAfter || 20);
    if (!(seconds > 0)) return;
    setTimeout(() => form.submit(), seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const root of document.querySelectorAll("[data-poll]")) poll(root);
    const finish = document.querySelector("form[data-return-after]");
    if (finish) returnAfter(finish);
  });
})();
