// Keeps the till page current: tap outcomes and the queue state arrive as server-sent events.
"use strict";

function text(id, value) {
  const el = document.getElementById(id);
  if (el) el.textContent = value == null ? "" : String(value);
}

function show(result) {
  const box = document.getElementById("result");
  box.className = "card " + (result.ok ? "ok" : (result.queued ? "offline" : "error"));
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
    for (const [label, id, value] of [["Tier", "tier", r.tier_name || r.tier], ["Points", "points", r.points],
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

const SERVER_STATE = {true: "reachable", false: "unreachable", null: "not contacted yet"};

function showQueue(state) {
  text("queue-depth", state.depth);
  text("queue-failed", state.failed);
  text("server-state", SERVER_STATE[state.online]);
  if (state.refused) {
    const list = document.getElementById("refused");
    const item = document.createElement("li");
    item.textContent = state.refused.kind + " " + state.refused.created_at.slice(0, 19)
      .replace("T", " ") + " — " + (state.refused.last_error || state.refused.problem.title);
    list.prepend(item);
    while (list.children.length > 10) list.lastElementChild.remove();
  }
}

const source = new EventSource("/events");
source.addEventListener("tap", (event) => {
  const result = JSON.parse(event.data);
  show(result);
  text("queue-depth", result.queue_depth);
  if (result.queued) text("server-state", SERVER_STATE[false]);
  else if (result.ok || (result.error && result.error.status)) text("server-state", SERVER_STATE[true]);
});
source.addEventListener("queue", (event) => showQueue(JSON.parse(event.data)));

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
