// The desk reader: a till agent in desk mode on this PC publishes each card it reads on its
// /events stream; the card's URL (or UID, or QR text) goes into the search field and the
// search form is sent, so the usual search (role-checked, audited) finds the customer.
"use strict";
(() => {
  const line = document.querySelector("[data-desk-reader]");
  const form = line && document.getElementById(line.dataset.form);
  const field = form && form.querySelector("[name=query]");
  if (!field || !window.EventSource) {
    return;
  }
  const url = line.dataset.deskReader.replace(/\/+$/, "") + "/events";
  const RETRY_MS = 5000;
  let sent = false;

  function show(ready) {
    line.hidden = false;
    line.querySelector("[data-state=ready]").hidden = !ready;
    line.querySelector("[data-state=down]").hidden = ready;
    line.classList.toggle("down", !ready);
  }

  function connect() {
    const source = new EventSource(url);
    source.addEventListener("open", () => show(true));
    source.addEventListener("error", () => {
      show(false);
      // a refused answer (no CORS header, agent not in desk mode) ends the stream for good;
      // the browser retries by itself only after a network error
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(connect, RETRY_MS);
      }
    });
    source.addEventListener("read", (event) => {
      // a tab in the background leaves the card to the one the person is looking at
      if (sent || document.visibilityState === "hidden") {
        return;
      }
      let read;
      try {
        read = JSON.parse(event.data);
      } catch {
        return;
      }
      const text = read && (read.url || read.uid || read.qr);
      if (!text) {
        return;
      }
      sent = true;
      source.close();
      field.value = text;
      if (form.requestSubmit) {
        form.requestSubmit();
      } else {
        form.submit();
      }
    });
  }

  connect();
})();
