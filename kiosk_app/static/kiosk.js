// Idle timeout: after IDLE_TIMEOUT seconds without a touch, the kiosk starts over, so that no
// screen ever shows a previous customer's data. A few seconds before, an "Are you still
// there?" overlay offers to continue. The server wipes an idle session on its own too
// (kiosk_app/views.py); the touches are reported to it (POST /alive, at most every 5 s) so a
// customer who is busy typing is never wiped there.
//
// window.kioskIdle = {arm(), pause(), resume()}: a page that works for a while without a
// touch (writing a card) pauses the timer and resumes it afterwards; while paused the session
// is kept alive.
"use strict";
(function () {
  const body = document.body;
  const seconds = Number(body.dataset.idleTimeout || 60);
  const form = document.getElementById("idle-reset");
  const overlay = document.getElementById("idle-overlay");
  const count = document.getElementById("idle-count");
  const keepOn = document.getElementById("idle-continue");
  const aliveUrl = body.dataset.aliveUrl;
  const PING_EVERY = 5000;
  const warnFor = Math.min(10, seconds / 2);  // the overlay's countdown, in seconds

  let warnTimer = null;
  let resetTimer = null;
  let tickTimer = null;
  let keepAlive = null;
  let pingTimer = null;
  let lastPing = Date.now();  // this page's own request counts
  let paused = false;

  function ping() {
    lastPing = Date.now();
    if (!aliveUrl) return;
    fetch(aliveUrl, {method: "POST", credentials: "same-origin", keepalive: true})
      .catch(() => {});  // the server is local; if it is gone, the reset will say so
  }

  // every touch reaches the server within PING_EVERY ms, never more often than that
  function reportActivity() {
    const since = Date.now() - lastPing;
    if (since >= PING_EVERY) {
      ping();
    } else if (pingTimer === null) {
      pingTimer = setTimeout(() => { pingTimer = null; ping(); }, PING_EVERY - since);
    }
  }

  function clearTimers() {
    clearTimeout(warnTimer);
    clearTimeout(resetTimer);
    clearInterval(tickTimer);
    warnTimer = resetTimer = tickTimer = null;
  }

  function hideOverlay() {
    if (overlay) overlay.hidden = true;
  }

  function reset() {
    if (!form) return;
    if (form.elements.why) form.elements.why.value = "idle";
    form.submit();
  }

  function warn() {
    let left = Math.ceil(warnFor);
    if (overlay) {
      overlay.hidden = false;
      if (count) count.textContent = String(left);
      tickTimer = setInterval(() => {
        left = Math.max(0, left - 1);
        if (count) count.textContent = String(left);
      }, 1000);
      if (keepOn) keepOn.focus({preventScroll: true});
    }
    resetTimer = setTimeout(reset, warnFor * 1000);
  }

  function arm() {
    clearTimers();
    hideOverlay();
    if (paused || !(seconds > 0) || !form) return;
    warnTimer = setTimeout(warn, (seconds - warnFor) * 1000);
  }

  function pause() {
    paused = true;
    clearTimers();
    hideOverlay();
    clearInterval(keepAlive);
    // nobody touches the screen while a card is written: keep the session alive meanwhile
    keepAlive = setInterval(ping, Math.max(1000, (seconds * 1000) / 3));
  }

  function resume() {
    paused = false;
    clearInterval(keepAlive);
    keepAlive = null;
    ping();
    arm();
  }

  function onActivity() {
    if (paused) return;
    reportActivity();
    arm();
  }

  for (const type of ["pointerdown", "keydown", "input", "touchstart"]) {
    document.addEventListener(type, onActivity, {passive: true, capture: true});
  }
  if (keepOn) keepOn.addEventListener("click", onActivity);

  // an error said about a field goes away once the customer corrects it
  document.addEventListener("input", (e) => {
    const field = e.target.closest && e.target.closest(".field.invalid");
    if (!field) return;
    field.classList.remove("invalid");
    e.target.removeAttribute("aria-invalid");
    for (const p of field.querySelectorAll(".error-text")) p.hidden = true;
  });

  // a page brought back from the back/forward cache would show what it showed then
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) window.location.reload();
  });

  window.kioskIdle = {arm, pause, resume};
  arm();
})();
