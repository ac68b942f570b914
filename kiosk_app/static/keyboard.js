// The on-screen keyboard. Any <input data-keyboard="TYPE"> gets it when focused, whatever the
// page (customer steps, issuing, staff mode), TYPE being:
//   name   letters of the page's language (AZERTY in French), its accented letters on top,
//          every French and Lithuanian accent a key away, capitals, hyphen, apostrophe, space
//   text   the same, with digits and punctuation a key away (survey answers)
//   email  letters, digits, @ . - _ and keys for common mail domains
//   phone  digits and +
//   digits a PIN pad
//   code   a customer code: capitals, digits and -
// A physical keyboard (or a keyboard-wedge scanner) keeps working as usual: the inputs only get
// inputmode="none" so that no other virtual keyboard pops up. Key labels come from #kb-labels
// (base.html) in the page's language.
"use strict";
(function () {
  const labels = document.getElementById("kb-labels");
  if (!labels) return;
  const T = labels.dataset;
  const lang = T.lang || "en";
  const SELECTOR = "input[data-keyboard]";

  const LETTERS = lang === "fr"
    ? ["azertyuiop", "qsdfghjklm", "wxcvbn"]
    : ["qwertyuiop", "asdfghjkl", "zxcvbnm"];
  // the row above the letters: the accents of the page's language
  const ACCENT_ROW = {
    fr: "éèêëàâçîïôùûœ",
    lt: "ąčęėįšųūž",
    en: "éèàçąčėšūž",
  }[lang] || "éèàçąčėšūž";
  // every accent a name may need, a key away
  const ALL_ACCENTS = ["àâæçéèêë", "îïôœùûüÿ", "ąčęėįšųūž"];
  const DOMAINS = {
    fr: ["@gmail.com", "@orange.fr", "@free.fr", "@outlook.fr", "@yahoo.fr", "@hotmail.fr"],
    lt: ["@gmail.com", "@inbox.lt", "@one.lt", "@gmail.lt", "@yahoo.com", "@outlook.com"],
    en: ["@gmail.com", "@outlook.com", "@yahoo.com", "@hotmail.com", "@icloud.com", "@orange.fr"],
  }[lang] || ["@gmail.com", "@outlook.com", "@yahoo.com"];

  // a key: a string inserts itself; an object is {fn, label, cls, text}
  const fn = (name, label, cls, extra) => Object.assign({fn: name, label, cls: cls || "fn"}, extra);
  const chars = (s) => Array.from(s);
  const BACK = fn("back", "⌫", "fn wide", {aria: T.backspace});
  const SHIFT = fn("shift", "⇧", "fn wide", {aria: T.shift});
  const SPACE = fn("text", "", "space", {text: " ", aria: T.space});
  const NEXT = fn("next", "", "go");

  function letterRows(withShift) {
    const rows = LETTERS.map(chars);
    rows[2] = [...(withShift ? [SHIFT] : []), ...rows[2], BACK];
    return rows;
  }

  const LAYOUTS = {
    name: {
      main: () => [
        [...chars(ACCENT_ROW), fn("panel", "àé…", "fn wide", {to: "accents", aria: T.accents})],
        ...letterRows(true),
        ["-", "'", SPACE, NEXT],
      ],
      accents: () => [
        ...ALL_ACCENTS.map(chars),
        [SHIFT, "-", "'", BACK],
        [fn("panel", "abc", "fn wide", {to: "main", aria: T.letters}), SPACE, NEXT],
      ],
    },
    text: {
      main: () => [
        [...chars(ACCENT_ROW), fn("panel", "àé…", "fn wide", {to: "accents", aria: T.accents})],
        ...letterRows(true),
        [fn("panel", "123", "fn wide", {to: "digits", aria: T.digits}), ",", ".", SPACE, "'", NEXT],
      ],
      accents: () => LAYOUTS.name.accents(),
      digits: () => [
        chars("1234567890"),
        chars("-/:;()€&@\""),
        [...chars(".,?!'%+"), BACK],
        [fn("panel", "abc", "fn wide", {to: "main", aria: T.letters}), SPACE, NEXT],
      ],
    },
    email: {
      main: () => [
        DOMAINS.map((d) => fn("domain", d, "domain", {text: d})),
        ...letterRows(false),
        [fn("panel", "123", "fn wide", {to: "digits", aria: T.digits}),
         "@", ".", "-", "_", fn("text", ".com", "fn wide", {text: ".com"}), NEXT],
      ],
      digits: () => [
        chars("1234567890"),
        [...chars("@.-_+"), BACK],
        [fn("panel", "abc", "fn wide", {to: "main", aria: T.letters}), NEXT],
      ],
    },
    phone: {
      narrow: true,
      main: () => [chars("123"), chars("456"), chars("789"), ["+", "0", BACK], [NEXT]],
    },
    digits: {
      narrow: true,
      main: () => [chars("123"), chars("456"), chars("789"), [BACK, "0", NEXT]],
    },
    code: {
      upper: true,
      main: () => [
        chars("1234567890"),
        chars("QWERTYUIOP"),
        chars("ASDFGHJKL"),
        [...chars("ZXCVBNM"), BACK],
        ["-", NEXT],
      ],
    },
  };

  const kb = document.createElement("div");
  kb.className = "kb";
  kb.hidden = true;
  kb.setAttribute("role", "group");
  kb.setAttribute("aria-label", T.keyboardName || "Keyboard");
  const rowsBox = document.createElement("div");
  rowsBox.className = "kb-rows";
  kb.appendChild(rowsBox);
  document.body.appendChild(kb);

  let target = null;
  let type = null;
  let panel = "main";
  let shift = false;

  function layoutOf(input) {
    const name = input.dataset.keyboard;
    return LAYOUTS[name] ? name : "text";
  }

  function nextInput() {
    const scope = target.form || document;
    const all = Array.from(scope.querySelectorAll(SELECTOR))
      .filter((el) => !el.disabled && !el.readOnly && el.offsetParent !== null);
    return all[all.indexOf(target) + 1] || null;
  }

  function caret(el) {
    // type=email inputs have no selection API: the caret is then at the end
    let start = null;
    let end = null;
    try { start = el.selectionStart; end = el.selectionEnd; } catch (e) { /* none */ }
    if (start === null || end === null) start = end = el.value.length;
    return [start, end];
  }

  function setValue(el, value, at) {
    el.value = value;
    try { el.setSelectionRange(at, at); } catch (e) { /* email inputs */ }
    el.dispatchEvent(new Event("input", {bubbles: true}));
  }

  function autoShift() {
    if (type !== "name" && type !== "text") return false;
    const before = target.value.slice(0, caret(target)[0]);
    if (type === "text") return before.trim() === "";
    return before === "" || /[\s-]$/.test(before);
  }

  function insert(text) {
    const el = target;
    const [start, end] = caret(el);
    const value = el.value.slice(0, start) + text + el.value.slice(end);
    if (el.maxLength > 0 && value.length > el.maxLength) return;
    setValue(el, value, start + text.length);
  }

  function backspace() {
    const el = target;
    const [start, end] = caret(el);
    if (start !== end) {
      setValue(el, el.value.slice(0, start) + el.value.slice(end), start);
    } else if (start > 0) {
      const head = Array.from(el.value.slice(0, start));
      head.pop();
      const kept = head.join("");
      setValue(el, kept + el.value.slice(end), kept.length);
    }
  }

  function domain(text) {
    const el = target;
    const at = el.value.indexOf("@");
    const value = (at >= 0 ? el.value.slice(0, at) : el.value) + text;
    if (el.maxLength > 0 && value.length > el.maxLength) return;
    setValue(el, value, value.length);
  }

  function render() {
    const spec = LAYOUTS[type];
    const upper = spec.upper || shift;
    const following = nextInput();
    kb.classList.toggle("kb-narrow", Boolean(spec.narrow));
    rowsBox.replaceChildren();
    for (const row of spec[panel]()) {
      const line = document.createElement("div");
      line.className = "kb-row";
      for (const k of row) {
        const b = document.createElement("button");
        b.type = "button";
        b.tabIndex = -1;
        if (typeof k === "string") {
          b.className = "kb-key";
          b.dataset.key = k;
          b.textContent = upper ? k.toLocaleUpperCase(lang) : k;
        } else {
          b.className = "kb-key " + k.cls;
          b.dataset.fn = k.fn;
          if (k.text) b.dataset.key = k.text;
          if (k.to) b.dataset.to = k.to;
          b.textContent = k.fn === "next" ? (following ? T.next : T.done) : k.label;
          if (k.fn === "text" && k.text === " ") b.textContent = T.space || "";
          if (k.aria) b.setAttribute("aria-label", k.aria);
          if (k.fn === "shift") {
            b.classList.toggle("on", shift);
            b.setAttribute("aria-pressed", String(shift));
          }
        }
        line.appendChild(b);
      }
      rowsBox.appendChild(line);
    }
  }

  function fit() {
    // room for the keyboard under the page, and the field in view above it
    document.body.style.setProperty("padding-bottom", kb.offsetHeight + "px");
    if (!target) return;
    const room = window.innerHeight - kb.offsetHeight;
    const box = target.getBoundingClientRect();
    // the field in the middle of what the keyboard leaves visible (its label too, if it fits)
    const want = Math.max(Math.min(40, room - box.height), (room - box.height) / 2);
    window.scrollBy(0, box.top - want);
  }

  function show(input) {
    const again = target === input && !kb.hidden;
    target = input;
    type = layoutOf(input);
    if (!again) panel = "main";
    shift = autoShift();
    input.setAttribute("inputmode", "none");
    render();
    kb.hidden = false;
    document.body.classList.add("kb-open");
    requestAnimationFrame(fit);
  }

  function hide() {
    kb.hidden = true;
    target = null;
    document.body.classList.remove("kb-open");
    document.body.style.removeProperty("padding-bottom");
  }

  function press(button) {
    if (!target) return;
    const action = button.dataset.fn;
    if (!action) {
      const k = button.dataset.key;
      insert(LAYOUTS[type].upper || shift ? k.toLocaleUpperCase(lang) : k);
      if (type === "name" && panel === "accents" && !shift) panel = "main";
      shift = autoShift();
    } else if (action === "text") {
      insert(button.dataset.key);
      shift = autoShift();
    } else if (action === "domain") {
      domain(button.dataset.key);
    } else if (action === "back") {
      backspace();
      shift = autoShift();
    } else if (action === "shift") {
      shift = !shift;
    } else if (action === "panel") {
      panel = button.dataset.to;
    } else if (action === "next") {
      const following = nextInput();
      if (following) {
        following.focus();
        return;
      }
      target.blur();
      hide();
      return;
    }
    render();
  }

  // keys never take the focus away from the field
  kb.addEventListener("pointerdown", (e) => e.preventDefault());
  kb.addEventListener("mousedown", (e) => e.preventDefault());
  kb.addEventListener("click", (e) => {
    const button = e.target.closest("button");
    if (button) press(button);
  });

  document.addEventListener("focusin", (e) => {
    if (e.target.matches && e.target.matches(SELECTOR)) show(e.target);
  });
  document.addEventListener("focusout", () => {
    // the focus may move straight to another field with a keyboard: look once it has moved
    setTimeout(() => {
      const active = document.activeElement;
      if (!(active && active.matches && active.matches(SELECTOR))) hide();
    }, 0);
  });
  // the physical keyboard's typing keeps the capitals state right
  document.addEventListener("input", (e) => {
    if (e.target === target && !kb.hidden) {
      const wanted = autoShift();
      if (wanted !== shift) { shift = wanted; render(); }
    }
  });
  window.addEventListener("resize", () => { if (!kb.hidden) fit(); });

  for (const el of document.querySelectorAll(SELECTOR)) el.setAttribute("inputmode", "none");
  // the first field with an error (or the first empty one) is ready to type in
  const first = document.querySelector(`${SELECTOR}[aria-invalid=true]`)
    || document.querySelector("[autofocus]");
  if (first && first.matches(SELECTOR)) first.focus();
})();
