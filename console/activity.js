// Activity: the events feed of DESIGN §11 (`GET /v1/events`, `/v1/events/stream`), newest
// at the top, filtered by workflow, run and type. The navigation shows this page only when
// the server answers `/v1/events` (app.js probes it), so servers without the feed hide it.

import { get, follow, query } from './api.js';
import { h, fill, when, badge, report } from './util.js';

const MAX_ROWS = 500;

/** `#/activity?workflow_id=&run_id=&type=`. */
export function activityPage(root, params) {
  const filter = {
    workflow_id: params.get('workflow_id') || '',
    run_id: params.get('run_id') || '',
    type: params.get('type') || '',
  };
  const slot = h('div', { class: 'slot' });
  const state = h('span', { class: 'stream-state' }, 'connecting');
  const body = h('tbody');
  const inputs = Object.keys(filter).map((k) => h('input', {
    id: `filter-${k}`, name: k, value: filter[k], placeholder: k === 'type' ? 'run.failed' : '', autocomplete: 'off',
  }));
  let stop = () => {};

  const row = (e) => h('tr', { 'data-id': e.id },
    h('td', {}, when(e.ts)),
    h('td', {}, h('code', {}, e.type)),
    h('td', {}, badge(e.status)),
    h('td', { class: 'mono' }, h('a', { href: `#/runs/${encodeURIComponent(e.run_id)}` }, e.run_id)),
    h('td', {}, e.step || ''),
    h('td', { class: 'mono' }, h('a', { href: `#/workflows/${encodeURIComponent(e.workflow_id)}` }, e.workflow_id)));

  const add = (e) => {
    if (body.querySelector(`tr[data-id="${CSS.escape(String(e.id))}"]`)) return;
    body.prepend(row(e));
    while (body.childElementCount > MAX_ROWS) body.lastElementChild.remove();
  };

  const start = async () => {
    stop();
    body.replaceChildren();
    report(slot, null);
    try {
      // The latest page first, then everything after it live.
      let after = '';
      let page = await get(`/v1/events${query({ ...filter, limit: 100 })}`);
      while (page.items.length) {
        page.items.forEach(add);
        after = page.next_after ?? page.items[page.items.length - 1].id;
        if (!page.next_after) break;
        page = await get(`/v1/events${query({ ...filter, after, limit: 100 })}`);
      }
      stop = follow(`/v1/events/stream${query(filter)}`, {
        lastEventId: after === '' ? null : after,
        final: [],
        onEvent: (event, data) => { if (data && typeof data === 'object' && 'run_id' in data) add(data); },
        onState: (s) => {
          if (typeof s === 'string') state.textContent = s;
          else report(slot, s);
        },
      });
    } catch (e) {
      report(slot, e);
    }
  };

  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Activity'), state),
    h('form', {
      class: 'filters',
      onsubmit: (ev) => {
        ev.preventDefault();
        inputs.forEach((i) => { filter[i.name] = i.value.trim(); });
        history.replaceState(null, '', `#/activity${query(filter)}`);
        start();
      },
    }, inputs.map((i) => [h('label', { for: i.id }, i.name), i]), h('button', { type: 'submit', class: 'secondary' }, 'Filter')),
    slot,
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'events' },
      h('thead', {}, h('tr', {}, h('th', {}, 'When'), h('th', {}, 'Event'), h('th', {}, 'Status'),
        h('th', {}, 'Run'), h('th', {}, 'Step'), h('th', {}, 'Workflow'))),
      body)));
  start();
  return () => stop();
}
