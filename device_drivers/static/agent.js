// Keeps the till page current: every tap outcome arrives as a server-sent event.
"use strict";

function text(id, value) {
  const el = document.getElementById(id);
  if (el) el.textContent = value == null ? "" : String(value);
}

function show(result) {
  const box = document.getElementById("result");
  box.className = "card " + (result.ok ? "ok" : "error");
  box.replaceChildren();
  const h1 = document.createElement("h1");
  h1.id = "name";
  box.append(h1);
  if (result.ok) {
    const r = result.record;
    h1.textContent = r.display_name;
    const code = document.createElement("p");
    code.className = "code"; code.id = "customer"; code.textContent = r.customer_id;
    const dl = document.createElement("dl");
    for (const [label, id, value] of [["Tier", "tier", r.tier], ["Points", "points", r.points],
                                      ["Card", "card", r.card.kind + " · " + r.card.status]]) {
      const dt = document.createElement("dt"); dt.textContent = label;
      const dd = document.createElement("dd"); dd.id = id; dd.textContent = value;
      dl.append(dt, dd);
    }
    box.append(code, dl);
    if (r.flags && r.flags.length) {
      const flags = document.createElement("p");
      flags.className = "flags"; flags.textContent = r.flags.join(", ");
      box.append(flags);
    }
  } else {
    h1.textContent = result.error.title;
    const detail = document.createElement("p");
    detail.id = "detail"; detail.textContent = result.error.detail || "";
    box.append(detail);
  }
}

const source = new EventSource("/events");
source.addEventListener("tap", (event) => show(JSON.parse(event.data)));

const form = document.getElementById("simulate");
if (form) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form).entries());
    fetch("/simulate", {method: "POST", headers: {"Content-Type": "application/json"},
                        body: JSON.stringify(data)});
    form.reset();
  });
}
