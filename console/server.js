// The server as `GET /v1/server` describes it: a banner on every page while it is not ready
// (its store does not answer or refuses writes, so changes fail), the Server page (id,
// readiness, lease, retention and what it deleted), and how long a finished run is kept.

import { get } from './api.js';
import { h, fill, every, duration, when } from './util.js';

const POLL_MS = 10000;

/** The last answer of `/v1/server`, or null before the first one. */
let latest = null;
const listeners = new Set();

function publish(server) {
  latest = server;
  for (const fn of listeners) fn(server);
}

/** Reads `/v1/server` once more and tells every watcher. */
export async function refresh() {
  try {
    publish(await get('/v1/server'));
  } catch (e) {
    // No answer at all (the server is down or restarting) says the same as "not ready".
    if (e.status === 0) publish({ ...(latest || {}), ready: false, reason: e.problem.detail || e.message });
  }
}

/** Keeps the banner `el` showing why the server is not ready, while it is not. */
export function watchReadiness(el) {
  const show = (server) => {
    if (server.ready) {
      el.hidden = true;
      el.replaceChildren();
      return;
    }
    fill(el, h('strong', {}, 'Not ready'), ' — ',
      server.reason || 'the store does not answer or refuses writes',
      '. Reads go on; changes fail until it recovers.');
    el.hidden = false;
  };
  listeners.add(show);
  if (latest) show(latest);
  const stop = every(POLL_MS, refresh);
  return () => {
    listeners.delete(show);
    stop();
    el.hidden = true;
  };
}

/** `retention.runs` in milliseconds, or null when finished runs are kept (or not known). */
export function runRetentionMs() {
  return latest && latest.retention ? latest.retention.runs_ms ?? null : null;
}

/** A duration as configured: `30d`, `36h`, `90s`, `250ms`. */
export function period(ms) {
  for (const [size, unit] of [[86400000, 'd'], [3600000, 'h'], [60000, 'm'], [1000, 's']]) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** "kept until …" for a run that finished at `finishedAt`; null when nothing deletes it. */
export function keptUntil(finishedAt) {
  const keep = runRetentionMs();
  if (!finishedAt || keep === null) return null;
  const at = new Date(Date.parse(finishedAt) + keep).toISOString();
  return h('span', { id: 'kept-until', title: `retention.runs: ${period(keep)}` }, 'kept until ', when(at));
}

function fact(label, value) {
  return [h('dt', {}, label), h('dd', {}, value)];
}

/** `#/server`. */
export function serverPage(root) {
  const facts = h('dl', { class: 'facts', id: 'server-facts' });
  const retention = h('dl', { class: 'facts', id: 'server-retention' });
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Server'),
      h('p', { class: 'muted' }, 'This server as it answers now; refreshed every few seconds.')),
    h('div', { class: 'split' },
      h('section', { class: 'card' }, h('h2', {}, 'Identity and readiness'), facts),
      h('section', { class: 'card' }, h('h2', {}, 'Retention'), retention)));
  const show = (server) => {
    if (!server.id) return;
    const r = server.retention || {};
    const kept = (ms, what) => (ms === null || ms === undefined ? `kept forever` : `${what} ${period(ms)}`);
    fill(facts,
      fact('Server id', h('code', {}, server.id)),
      fact('Version', server.version),
      fact('Store', server.store === 'postgres' ? 'PostgreSQL' : 'embedded (SQLite)'),
      fact('Ready', server.ready
        ? h('span', { class: 'badge st-succeeded', id: 'server-ready' }, 'ready')
        : [h('span', { class: 'badge st-failed', id: 'server-ready' }, 'not ready'), ' ',
          h('span', { class: 'error-text' }, server.reason || '')]),
      fact('Run lease', `${duration(server.lease_ttl_ms)} (a replica takes over a dead server's runs after it)`),
      fact('Hooks', (server.hooks || []).length
        ? h('ul', { class: 'plain', id: 'server-hooks' }, server.hooks.map((k) => h('li', {}, h('code', {}, k.target), ' ',
          k.delivering ? `delivered by this server (${k.delivered} since start)` : 'delivered by another replica')))
        : 'none configured'));
    fill(retention,
      fact('Finished runs', kept(r.runs_ms, 'deleted after')),
      fact('Hook events', kept(r.hook_events_ms, 'acknowledged ones deleted after')),
      fact('Checked every', period(r.interval_ms)),
      fact('Deleted since start', `${r.deleted ? r.deleted.runs : 0} run(s), ${r.deleted ? r.deleted.hook_events : 0} hook event(s)`));
  };
  listeners.add(show);
  if (latest) show(latest);
  const stop = every(5000, refresh);
  return () => {
    listeners.delete(show);
    stop();
  };
}
