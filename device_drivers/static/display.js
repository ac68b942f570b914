// The customer display follows the till's server-sent events: a tap shows the customer, a
// purchase updates their points, and after a while the screen forgets them.
"use strict";

const LABELS = JSON.parse(document.getElementById("labels").textContent);
const DEFAULT = document.body.dataset.defaultLanguage;
const CLEAR_AFTER = parseFloat(document.body.dataset.clearAfter) * 1000;
// the customer id on screen, to match a purchase to them (never shown)
let shown = document.getElementById("display").dataset.customer || null;
let timer = null;

function words(language) {
  return LABELS[language] || LABELS[DEFAULT] || LABELS.en;
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = String(text);
  Object.assign(node, attrs || {});
  return node;
}

function render(state, build) {
  const main = document.getElementById("display");
  main.className = state;
  main.replaceChildren(...build());
  clearTimeout(timer);
  if (state !== "idle") timer = setTimeout(idle, CLEAR_AFTER);
}

function idle() {
  shown = null;
  render("idle", () => [el("h1", words(DEFAULT).welcome, {id: "greeting"})]);
}

function showTap(result) {
  if (result.ok) {
    const r = result.record;
    const w = words(r.language);
    shown = r.customer_id;
    render("ok", () => {
      const nodes = [];
      const h1 = el("h1", w.hello + ", ", {id: "greeting"});
      h1.append(el("span", r.display_name, {id: "name"}));
      const points = el("p", null, {className: "points"});
      points.append(el("span", r.points, {id: "points"}), " " + w.points);
      const tier = el("p", w.tier + ": ", {className: "tier"});
      tier.append(el("span", r.tier_name || r.tier, {id: "tier"}));
      nodes.push(h1, points, tier);
      if (r.rewards_available && r.rewards_available.length) {
        const section = el("section", null, {className: "rewards"});
        const list = el("ul", null, {id: "rewards"});
        for (const reward of r.rewards_available) list.append(el("li", reward.name));
        section.append(el("h2", w.rewards), list);
        nodes.push(section);
      }
      return nodes;
    });
  } else if (result.queued) {
    shown = null;
    const w = words(DEFAULT);
    render("offline", () => [el("h1", w.offline, {id: "greeting"}),
                             el("p", w.offline_detail, {className: "detail"})]);
  } else {
    shown = null;
    render("refused", () => [el("h1", words(DEFAULT).refused, {id: "greeting"})]);
  }
}

function showPurchase(purchase) {
  if (!shown || purchase.customer_id !== shown) return;
  const points = document.getElementById("points");
  const tier = document.getElementById("tier");
  if (points && purchase.balance != null) points.textContent = String(purchase.balance);
  if (tier && purchase.tier) tier.textContent = purchase.tier_name || purchase.tier;
  clearTimeout(timer);
  timer = setTimeout(idle, CLEAR_AFTER);
}

if (document.getElementById("display").className !== "idle") {
  timer = setTimeout(idle, CLEAR_AFTER);
}
const source = new EventSource("/events");
source.addEventListener("tap", (event) => showTap(JSON.parse(event.data)));
source.addEventListener("purchase", (event) => showPurchase(JSON.parse(event.data)));
