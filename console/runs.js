// Runs: newest first, filtered by workflow and status, paged, with counts by status. There
// is no server-wide run stream yet, so the page re-reads its page every 2.5 s (only while
// visible) and the counts (and the workflows of the filter) every 15 s or when the page
// changed. Counts come from list queries capped at COUNT_CAP runs per status ("100+"
// beyond), so a busy server pays at most six small reads per refresh.

import { get, query } from './api.js';
import { h, fill, when, badge, duration, between, report, every } from './util.js';
import { pager } from './workflows.js';

export const STATUSES = ['PENDING', 'RUNNING', 'WAITING_APPROVAL', 'WAITING', 'SUCCEEDED', 'FAILED', 'CANCELED'];
const COUNT_CAP = 100;

function currentStep(run) {
  const step = run.steps && run.steps[run.current_step];
  return step ? step.name : '—';
}

/** `#/runs?workflow_id=&status=`. */
export function runList(root, params, ctx) {
  const filter = { workflow_id: params.get('workflow_id') || '', status: params.get('status') || '' };
  const slot = h('div', { class: 'slot' });
  const body = h('tbody');
  const counts = h('div', { class: 'counts', id: 'counts', role: 'group', 'aria-label': 'Runs by status' });
  const workflow = h('select', { id: 'filter-workflow', name: 'workflow_id' }, h('option', { value: '' }, 'All workflows'));
  const status = h('select', { id: 'filter-status', name: 'status' }, h('option', { value: '' }, 'Any status'),
    STATUSES.map((st) => h('option', { value: st, selected: st === filter.status }, st)));
  const pages = pager(() => refresh());
  let seen = '';
  let countsAt = 0;
  let seenWorkflows = '';

  const apply = () => {
    filter.workflow_id = workflow.value;
    filter.status = status.value;
    history.replaceState(null, '', `#/runs${query(filter)}`);
    pages.reset();
    seen = '';
    countsAt = 0;
    refresh();
  };
  workflow.addEventListener('change', apply);
  status.addEventListener('change', apply);

  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Runs')),
    h('div', { class: 'filters' },
      h('label', { for: 'filter-workflow' }, 'Workflow'), workflow,
      h('label', { for: 'filter-status' }, 'Status'), status),
    counts,
    slot,
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'runs' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Run'), h('th', {}, 'Workflow'), h('th', {}, 'Status'),
        h('th', {}, 'Created'), h('th', { class: 'num' }, 'Duration'), h('th', {}, 'Current step'))),
      body)),
    pages.el,
  );

  const chip = (st, n) => h('button', {
    type: 'button', class: ['chip', `st-${st.toLowerCase()}`, filter.status === st && 'active'], 'data-status': st,
    'aria-pressed': filter.status === st ? 'true' : 'false',
    onclick: () => { status.value = filter.status === st ? '' : st; apply(); },
  }, h('span', { class: 'chip-label' }, st), h('span', { class: 'chip-n' }, n));

  const loadWorkflows = async () => {
    const page = await get('/v1/workflows?limit=200');
    const ids = page.items.map((w) => w.id);
    const text = JSON.stringify(page.items.map((w) => [w.id, w.name]));
    if (text === seenWorkflows) return;
    seenWorkflows = text;
    if (filter.workflow_id && !ids.includes(filter.workflow_id)) ids.push(filter.workflow_id);
    fill(workflow, h('option', { value: '' }, 'All workflows'),
      ids.map((id) => {
        const wf = page.items.find((w) => w.id === id);
        return h('option', { value: id, selected: id === filter.workflow_id }, wf ? `${wf.name} (${id})` : id);
      }));
  };

  const refreshCounts = async () => {
    countsAt = Date.now();
    loadWorkflows().catch((e) => report(slot, e));
    if (!counts.childElementCount) fill(counts, STATUSES.map((st) => chip(st, '…')));
    const numbers = await Promise.all(STATUSES.map(async (st) => {
      const page = await get(`/v1/runs${query({ workflow_id: filter.workflow_id, status: st, limit: COUNT_CAP })}`);
      return page.next_cursor ? `${page.items.length}+` : String(page.items.length);
    }));
    fill(counts, STATUSES.map((st, i) => chip(st, numbers[i])));
  };

  const refresh = async () => {
    try {
      const page = await get(`/v1/runs${query({ ...filter, limit: 25, cursor: pages.cursor() })}`);
      report(slot, null);
      pages.set(page.next_cursor);
      const text = JSON.stringify(page.items.map((r) => [r.id, r.status, r.updated_at]));
      const changed = text !== seen;
      if (changed || Date.now() - countsAt > 15000) await refreshCounts();
      if (!changed) {
        for (const row of body.querySelectorAll('tr[data-running]')) {
          const run = page.items.find((r) => r.id === row.getAttribute('data-id'));
          if (run) row.querySelector('.dur').textContent = duration(between(run.started_at, run.finished_at));
        }
        return;
      }
      seen = text;
      fill(body, page.items.length ? page.items.map((run) => h('tr', {
        'data-id': run.id, 'data-status': run.status, 'data-running': run.finished_at ? null : '',
      },
      h('td', { class: 'mono' }, h('a', { href: `#/runs/${encodeURIComponent(run.id)}` }, run.id)),
      h('td', {}, h('a', { href: `#/workflows/${encodeURIComponent(run.workflow_id)}` }, run.workflow_id),
        h('span', { class: 'muted' }, ` v${run.workflow_version}`)),
      h('td', {}, badge(run.status)),
      h('td', {}, when(run.created_at)),
      h('td', { class: 'num dur' }, duration(between(run.started_at, run.finished_at))),
      h('td', { class: 'clip' }, currentStep(run)))) : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No runs match.')));
    } catch (e) {
      report(slot, e);
    }
  };
  return every(2500, refresh);
}
