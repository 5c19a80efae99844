// DOM building, times, durations, JSON highlighting and error display, shared by the pages.
// Everything is built with DOM calls (text nodes, never HTML strings), so data from the API
// cannot inject markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (key === 'value' && 'value' in el) {
      el.value = value;
    } else if (key === 'checked' || key === 'disabled' || key === 'selected') {
      el[key] = true;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: `h('a', {href: '#/x', onclick: f}, 'text', child…)`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  return build(el, {}, children);
}

const UNITS = [
  ['year', 365 * 86400], ['month', 30 * 86400], ['day', 86400],
  ['h', 3600], ['min', 60], ['s', 1],
];

/** "3 min ago" / "in 2 s" for an RFC 3339 time. */
export function relative(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const secs = Math.round((now - t) / 1000);
  const abs = Math.abs(secs);
  if (abs < 5) return 'just now';
  for (const [unit, size] of UNITS) {
    if (abs >= size) {
      const n = Math.floor(abs / size);
      const label = unit.length > 3 ? `${n} ${unit}${n === 1 ? '' : 's'}` : `${n} ${unit}`;
      return secs >= 0 ? `${label} ago` : `in ${label}`;
    }
  }
  return 'just now';
}

/** A `<time>` showing the relative time, the exact time on hover; kept fresh by `tick`. */
export function when(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const exact = new Date(iso);
  return h('time', { datetime: iso, title: exact.toISOString().replace('T', ' ').replace('Z', ' UTC'), 'data-rel': '' },
    relative(iso));
}

/** Refreshes every relative time on the page. */
export function tick() {
  for (const el of document.querySelectorAll('time[data-rel]')) {
    const text = relative(el.getAttribute('datetime'));
    if (el.textContent !== text) el.textContent = text;
  }
}

/** A duration in human units: "850 ms", "4.2 s", "3 min 5 s", "2 h 1 min", "3 d 4 h". */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const secs = ms / 1000;
  if (secs < 60) return `${secs < 10 ? secs.toFixed(1) : Math.round(secs)} s`;
  let rest = Math.round(secs);
  const out = [];
  for (const [size, unit] of [[86400, 'd'], [3600, 'h'], [60, 'min'], [1, 's']]) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n > 0 || out.length) out.push([n, unit]);
    if (out.length === 2) break;
  }
  return out.filter(([n]) => n > 0).map(([n, unit]) => `${n} ${unit}`).join(' ');
}

/** Milliseconds between two RFC 3339 times (the second defaults to now). */
export function between(start, end) {
  if (!start) return null;
  const to = end ? Date.parse(end) : Date.now();
  return Math.max(0, to - Date.parse(start));
}

/** A status as a colored badge. */
export function badge(status) {
  return h('span', { class: ['badge', `st-${String(status || '').toLowerCase()}`] }, status || '—');
}

const TEMPLATE = /(\{\{.*?\}\}|\[\[.*?\]\])/g;

function stringSpan(text, cls) {
  const el = h('span', { class: cls });
  const parts = text.split(TEMPLATE);
  parts.forEach((part, i) => {
    el.append(i % 2 ? h('span', { class: 'j-tpl' }, part) : part);
  });
  return el;
}

/** Pretty JSON as highlighted DOM: keys, strings, numbers, literals, and `{{ templates }}`. */
export function highlight(value) {
  const text = JSON.stringify(value, null, 2) ?? 'undefined';
  const out = h('code', { class: 'json' });
  const token = /("(?:[^"\\]|\\.)*")(\s*:)?|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|\b(true|false|null)\b/g;
  let last = 0;
  for (const m of text.matchAll(token)) {
    if (m.index > last) out.append(text.slice(last, m.index));
    if (m[1] && m[2]) {
      out.append(h('span', { class: 'j-key' }, m[1]), m[2]);
    } else if (m[1]) {
      out.append(stringSpan(m[1], 'j-str'));
    } else if (m[3]) {
      out.append(h('span', { class: 'j-num' }, m[3]));
    } else {
      out.append(h('span', { class: 'j-lit' }, m[4]));
    }
    last = m.index + m[0].length;
  }
  out.append(text.slice(last));
  return h('pre', { class: 'code' }, out);
}

/** An API error (or any error) as an alert: title, status, detail and every pointer. */
export function problem(err) {
  const p = err && err.problem ? err.problem : { title: 'Error', detail: String(err && err.message || err) };
  const errors = Array.isArray(p.errors) ? p.errors : [];
  return h('div', { class: 'problem', role: 'alert' },
    h('strong', { class: 'problem-title' }, p.title || 'Error', p.status ? ` (${p.status})` : ''),
    p.detail ? h('p', { class: 'problem-detail' }, p.detail) : null,
    errors.length ? h('ul', { class: 'problem-errors' }, errors.map((e) =>
      h('li', {}, h('code', { class: 'pointer' }, e.pointer === '' ? '(body)' : e.pointer), ' ', e.message))) : null);
}

/** Shows `err` in `slot` (or clears it with `null`). */
export function report(slot, err) {
  if (!slot) return;
  if (err) fill(slot, problem(err));
  else slot.replaceChildren();
}

/** Calls `fn` now and then every `ms` (skipped while the tab is hidden) until stopped. */
export function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try { await fn(); } catch (e) { reportUnexpected(e); }
    }
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  const wake = () => { if (!document.hidden && !stopped) { clearTimeout(timer); run(); } };
  document.addEventListener('visibilitychange', wake);
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', wake);
  };
}

/** Records an unexpected error where the tests (and the console) look. */
export function reportUnexpected(e) {
  window.__errors = window.__errors || [];
  window.__errors.push(String(e && e.stack || e));
  console.error(e);
}

/** A modal confirmation; resolves true when confirmed. Keyboard: Enter confirms, Esc cancels. */
export function confirmDialog(title, text, confirmLabel, danger = false) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-title' });
    const done = (ok) => { dialog.close(); dialog.remove(); resolve(ok); };
    const form = h('form', { method: 'dialog', onsubmit: (e) => { e.preventDefault(); done(true); } },
      h('h2', { id: 'confirm-title' }, title),
      h('p', {}, text),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', onclick: () => done(false) }, 'Cancel'),
        h('button', { type: 'submit', class: danger ? 'danger' : 'primary', 'data-confirm': '' }, confirmLabel)));
    dialog.append(form);
    dialog.addEventListener('cancel', (e) => { e.preventDefault(); done(false); });
    document.body.append(dialog);
    dialog.showModal();
    form.querySelector('[data-confirm]').focus();
  });
}

/** Runs an action from a button: disables it meanwhile, reports its error in `slot`. */
export async function act(button, slot, fn, onError = () => {}) {
  if (button) button.disabled = true;
  report(slot, null);
  try {
    return await fn();
  } catch (e) {
    report(slot, e);
    onError(e);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}
