// The console's entry point: records unexpected errors, asks for a token when the API wants
// one, learns the caller's role from /v1/whoami, and routes `#/…` to the pages. Every page
// is `(root, params, ctx) => cleanup` and updates itself live until cleaned up.

import { get, setToken, token, ApiError } from './api.js';
import { h, fill, problem, tick } from './util.js';
import { workflowList, workflowPage } from './workflows.js';
import { runList } from './runs.js';
import { runPage } from './run.js';
import { activityPage } from './activity.js';
import { scheduleList, triggerList } from './triggers.js';
import { serverPage, watchReadiness, refresh as refreshServer } from './server.js';
import { queuesPage } from './queues.js';

window.__errors = window.__errors || [];
window.addEventListener('error', (e) => window.__errors.push(`error: ${e.message} at ${e.filename}:${e.lineno}`));
window.addEventListener('unhandledrejection', (e) => window.__errors.push(`unhandled rejection: ${e.reason && e.reason.stack || e.reason}`));
document.addEventListener('securitypolicyviolation', (e) => window.__errors.push(`CSP: ${e.violatedDirective} ${e.blockedURI}`));

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const banner = document.getElementById('banner');

// The pages in the navigation. Features that land later (queues and workers, schedules and
// triggers) add an entry here and a page module; `probe` hides an entry whose API this
// server does not have yet.
const PAGES = [
  { hash: '#/workflows', label: 'Workflows' },
  { hash: '#/runs', label: 'Runs' },
  { hash: '#/activity', label: 'Activity', probe: '/v1/events?limit=1' },
  { hash: '#/schedules', label: 'Schedules', probe: '/v1/schedules' },
  { hash: '#/triggers', label: 'Triggers', probe: '/v1/triggers' },
  { hash: '#/server', label: 'Server' },
  { hash: '#/queues', label: 'Queues', probe: '/v1/queues' },
];

const ctx = { canWrite: false, role: null, name: null, available: new Set() };
let cleanup = () => {};
let unwatch = () => {};

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/workflows';
  const [path, q = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(q) };
}

function route() {
  cleanup();
  cleanup = () => {};
  const { parts, query } = parseHash();
  const [section, id] = parts;
  for (const a of nav.querySelectorAll('a')) {
    a.toggleAttribute('aria-current', a.getAttribute('href') === `#/${section}`);
  }
  const root = fill(main);
  let page = null;
  if (section === 'workflows' && id) page = () => workflowPage(root, id, query, ctx);
  else if (section === 'workflows') page = () => workflowList(root, query, ctx);
  else if (section === 'runs' && id) page = () => runPage(root, id, query, ctx);
  else if (section === 'runs') page = () => runList(root, query, ctx);
  else if (section === 'activity' && ctx.available.has('#/activity')) page = () => activityPage(root, query, ctx);
  else if (section === 'schedules' && ctx.available.has('#/schedules')) page = () => scheduleList(root, query, ctx);
  else if (section === 'triggers' && ctx.available.has('#/triggers')) page = () => triggerList(root, query, ctx);
  else if (section === 'server') page = () => serverPage(root, query, ctx);
  else if (section === 'queues' && ctx.available.has('#/queues')) page = () => queuesPage(root, query, ctx);
  if (!page) {
    root.append(h('h1', {}, 'Not found'), h('p', {}, 'There is no such page. ', h('a', { href: '#/workflows' }, 'Workflows')));
    return;
  }
  cleanup = page() || (() => {});
}

function renderNav() {
  fill(nav, PAGES.filter((p) => !p.probe || ctx.available.has(p.hash))
    .map((p) => h('a', { href: p.hash }, p.label)));
  fill(who,
    h('span', { class: 'muted', title: `role: ${ctx.role}` }, `${ctx.name} · ${ctx.role}`),
    token() ? h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out') : null);
}

function signOut() {
  unwatch();
  setToken(null);
  cleanup();
  cleanup = () => {};
  login();
}

async function probe() {
  await Promise.all(PAGES.filter((p) => p.probe).map(async (p) => {
    try {
      await get(p.probe);
      ctx.available.add(p.hash);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) ctx.available.add(p.hash);
    }
  }));
}

function login(err) {
  nav.replaceChildren();
  who.replaceChildren();
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const slot = h('div', { class: 'slot' }, err ? problem(err) : null);
  const form = h('form', {
    class: 'login card',
    onsubmit: async (ev) => {
      ev.preventDefault();
      setToken(input.value.trim());
      await start(slot);
    },
  },
  h('h1', {}, 'Sign in'),
  h('p', {}, 'This server needs an API token. It is kept in this browser tab only, until you close it or sign out.'),
  h('label', { for: 'token' }, 'Token'), input,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in')),
  slot);
  fill(main, form);
  input.focus();
}

async function start(slot) {
  try {
    const me = await get('/v1/whoami');
    ctx.name = me.name;
    ctx.role = me.role;
    ctx.canWrite = me.role === 'admin';
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      const hadToken = Boolean(token());
      setToken(null);
      if (slot && hadToken) fill(slot, problem(e));
      else login(hadToken ? e : null);
      return;
    }
    fill(main, h('h1', {}, 'The console cannot start'), problem(e));
    return;
  }
  await Promise.all([probe(), refreshServer()]);
  unwatch();
  unwatch = watchReadiness(banner);
  renderNav();
  route();
}

window.addEventListener('hashchange', () => { if (ctx.role) route(); });
window.addEventListener('orchestrator:unauthorized', () => {
  if (!ctx.role) return;
  ctx.role = null;
  unwatch();
  setToken(null);
  cleanup();
  cleanup = () => {};
  login(new ApiError(401, { title: 'Unauthorized', detail: 'The token is no longer accepted; sign in again.' }));
});
setInterval(tick, 5000);
start();
