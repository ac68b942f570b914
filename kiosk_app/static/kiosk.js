// Idle timeout: after a while without a touch, wipe the session and go back to the start,
// so that no screen ever shows a previous customer's data.
"use strict";
(function () {
  const seconds = Number(document.body.dataset.idleTimeout || 60);
  const form = document.getElementById("idle-reset");
  if (!form || !(seconds > 0)) return;
  let timer;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => form.submit(), seconds * 1000);
  };
  for (const type of ["pointerdown", "keydown", "input", "touchstart"]) {
    document.addEventListener(type, arm, {passive: true});
  }
  arm();
})();
