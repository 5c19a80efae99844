// Queues and workers (DESIGN §8): every task queue with what waits on it and what is in
// flight, and the workers seen polling in the last five minutes. Both lists are read again
// every 2 s while the page is visible (there is no stream of queue changes).

import { get } from './api.js';
import { h, fill, when, report, every } from './util.js';

const REFRESH_MS = 2000;

function waited(ms) {
  if (ms == null) return '—';
  const s = Math.floor(ms / 1000);
  if (s < 1) return `${ms} ms`;
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** `#/queues`. */
export function queuesPage(root) {
  const slot = h('div', { class: 'slot' });
  const queues = h('tbody');
  const workers = h('tbody');
  const queueRow = (q) => h('tr', { 'data-queue': q.queue },
    h('td', { class: 'mono' }, q.queue),
    h('td', { class: 'num' }, String(q.waiting)),
    h('td', { class: 'num' }, String(q.in_flight)),
    h('td', { class: 'num' }, waited(q.oldest_waiting_ms)),
    h('td', {}, q.workers.length ? q.workers.join(', ') : h('span', { class: 'muted' }, 'none')));
  const workerRow = (w) => h('tr', { 'data-worker': w.name },
    h('td', { class: 'mono' }, w.name),
    h('td', {}, w.queues.join(', ')),
    h('td', { class: 'num' }, String(w.in_flight)),
    h('td', {}, when(w.last_seen)));
  const empty = (cols, text) => h('tr', {}, h('td', { colspan: cols, class: 'muted' }, text));

  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Queues')),
    h('p', { class: 'muted' }, 'Steps with "action": "task" wait here for a worker (',
      h('code', {}, 'orchestrator worker'), ' or your own).'),
    slot,
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'queues' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Queue'), h('th', { class: 'num' }, 'Waiting'),
        h('th', { class: 'num' }, 'In flight'), h('th', { class: 'num' }, 'Oldest wait'), h('th', {}, 'Workers'))),
      queues)),
    h('h2', {}, 'Workers'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'workers' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Worker'), h('th', {}, 'Queues'),
        h('th', { class: 'num' }, 'In flight'), h('th', {}, 'Last seen'))),
      workers)),
  );

  return every(REFRESH_MS, async () => {
    try {
      const [q, w] = await Promise.all([get('/v1/queues'), get('/v1/workers')]);
      fill(queues, q.items.length ? q.items.map(queueRow) : empty(5, 'No queue has been used yet.'));
      fill(workers, w.items.length ? w.items.map(workerRow) : empty(4, 'No worker polled in the last five minutes.'));
      report(slot, null);
    } catch (e) {
      report(slot, e);
    }
  });
}
