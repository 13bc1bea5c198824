// tests/support/browser.py keyboard_unreached: which interactive elements the Tab key reaches.
// Evaluated in the page (over the DevTools protocol, so the page's CSP does not apply); it defines
// window.__keyboard with start(selectors), step(selectors) and unreached(selectors), once per document.
if (window.__keyboard) return;
const NATIVE = [
  "a[href]", "area[href]", "button", "input:not([type=hidden])", "select", "textarea", "summary",
  "iframe", "[contenteditable]:not([contenteditable=false])", "[tabindex]:not([tabindex^='-'])",
  "[role=button]", "[role=link]", "[role=checkbox]", "[role=switch]", "[onclick]",
].join(",");
const HTMX = "[hx-get],[hx-post],[hx-put],[hx-patch],[hx-delete]";

// an htmx element counts when a click triggers it (the default for all but forms and fields);
// one that loads or refreshes by itself (hx-trigger="load", "every 30s") is not interactive
const clickable = (el) => el.tagName !== "FORM" && (!el.hasAttribute("hx-trigger")
  || /\bclick\b/.test(el.getAttribute("hx-trigger")));
const usable = (el) => !el.disabled && !el.closest("[inert]")
  && el.checkVisibility({ visibilityProperty: true });

function describe(el) {
  const id = el.id ? `#${el.id}` : "";
  const cls = [...el.classList].slice(0, 2).map((c) => `.${c}`).join("");
  const text = (el.getAttribute("aria-label") || el.innerText || el.value || el.title || "")
    .replace(/\s+/g, " ").trim().slice(0, 40);
  return `${el.tagName.toLowerCase()}${id}${cls}${text ? ` "${text}"` : ""}`;
}

function targets(selectors) {
  if (selectors) {
    return selectors.map((s) => [s, [...document.querySelectorAll(s)].filter(usable)]);
  }
  const all = [...document.querySelectorAll(`${NATIVE},${HTMX}`)]
    .filter((el) => usable(el) && (el.matches(NATIVE) || clickable(el)));
  return all.map((el) => [null, [el]]);
}

const seen = new Set();
const ids = new WeakMap();
let next = 1;

function reached(el) {
  if (seen.has(el)) return true;
  if (el.type !== "radio" || !el.name) return false;
  return [...seen].some((s) => s.type === "radio" && s.name === el.name && s.form === el.form);
}

function missing(selectors) {
  const out = [];
  for (const [selector, els] of targets(selectors)) {
    if (selector !== null && els.length === 0) out.push(`${selector}: matches no visible element`);
    for (const el of els.filter((e) => !reached(e))) {
      out.push(selector === null ? describe(el) : `${selector}: ${describe(el)}`);
    }
  }
  return out;
}

document.addEventListener("focusin", (e) => seen.add(e.composedPath()[0] || e.target), true);
window.__keyboard = {
  start(selectors) {
    seen.clear();
    if (document.activeElement && document.activeElement !== document.body) seen.add(document.activeElement);
    return targets(selectors).reduce((n, [, els]) => n + els.length, 0);
  },
  step(selectors) {
    const el = document.activeElement;
    let active = 0;
    if (el && el !== document.body) {
      if (!ids.has(el)) ids.set(el, next++);
      active = ids.get(el);
    }
    return { active, remaining: missing(selectors).length };
  },
  unreached: missing,
};
