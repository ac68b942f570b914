// The print button of a card page: shown only where scripts run (the page says Ctrl+P too).
"use strict";
document.querySelectorAll("[data-print]").forEach((button) => {
  button.hidden = false;
  button.addEventListener("click", () => window.print());
});
