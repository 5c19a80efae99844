// Runs: newest first, filtered by workflow, statuses, creation time, version, trigger and
// context members (the query of GET /v1/runs, kept in the page's URL), paged, with counts
// by status. Lists are read as summaries (?view=summary: no contexts or outputs), and the
// counts come from GET /v1/runs/counts with the same filters. There is no server-wide run
// stream yet, so the page re-reads its page every 2.5 s (only while visible) and the counts
// (and the workflows of the filter) every 15 s or when the page changed.

import { get, query } from './api.js';
import { h, fill, when, badge, duration, between, report, every } from './util.js';
import { pager } from './workflows.js';

export const STATUSES = ['PENDING', 'RUNNING', 'WAITING_APPROVAL', 'WAITING', 'SUCCEEDED', 'FAILED', 'CANCELED'];
const TRIGGERS = ['api', 'schedule', 'webhook'];
const FIELDS = ['workflow_id', 'status', 'created_after', 'created_before', 'workflow_version', 'trigger'];

function currentStep(run) {
  const step = run.steps && run.steps[run.current_step];
  return step ? step.name : '—';
}

/** `2024-05-01T12:00` in local time, for a datetime-local field, from an RFC 3339 time. */
function localInput(iso) {
  if (!iso) return '';
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return '';
  return new Date(t.getTime() - t.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

/** The RFC 3339 time of a datetime-local field's value (local time). */
function fromLocal(value) {
  return value ? new Date(value).toISOString() : '';
}

/** `#/runs?workflow_id=&status=A,B&created_after=&created_before=&workflow_version=&trigger=&context.KEY=VALUE`. */
export function runList(root, params, ctx) {
  const filter = Object.fromEntries(FIELDS.map((k) => [k, params.get(k) || '']));
  const contextFilters = [...params.entries()].filter(([k]) => k.startsWith('context.'));
  const statuses = () => filter.status.split(',').filter(Boolean);
  const slot = h('div', { class: 'slot' });
  const body = h('tbody');
  const counts = h('div', { class: 'counts', id: 'counts', role: 'group', 'aria-label': 'Runs by status (select several)' });
  const workflow = h('select', { id: 'filter-workflow', name: 'workflow_id' }, h('option', { value: '' }, 'All workflows'));
  const status = h('select', { id: 'filter-status', name: 'status' });
  const after = h('input', { id: 'filter-after', name: 'created_after', type: 'datetime-local', value: localInput(filter.created_after) });
  const before = h('input', { id: 'filter-before', name: 'created_before', type: 'datetime-local', value: localInput(filter.created_before) });
  const version = h('input', {
    id: 'filter-version', name: 'workflow_version', type: 'number', min: 1, step: 1, inputmode: 'numeric',
    value: filter.workflow_version, placeholder: 'any',
  });
  const trigger = h('select', { id: 'filter-trigger', name: 'trigger' }, h('option', { value: '' }, 'Any'),
    TRIGGERS.map((t) => h('option', { value: t, selected: t === filter.trigger }, t)));
  const context = h('input', {
    id: 'filter-context', name: 'context', type: 'search', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'key=value', value: contextFilters.map(([k, v]) => `${k.slice(8)}=${v}`).join(' & '),
    'aria-describedby': 'filter-context-hint',
  });
  const pages = pager(() => refresh());
  let seen = '';
  let countsAt = 0;
  let seenWorkflows = '';

  const fillStatus = () => {
    const chosen = statuses();
    fill(status, h('option', { value: '' }, 'Any status'),
      chosen.length > 1 ? h('option', { value: filter.status, selected: true }, chosen.join(' + ')) : null,
      STATUSES.map((st) => h('option', { value: st, selected: chosen.length === 1 && st === chosen[0] }, st)));
  };
  fillStatus();

  /** `key=value & key2=value2` as context filters, or null when a part is no `key=value`. */
  const contextPairs = () => {
    const parts = context.value.split('&').map((p) => p.trim()).filter(Boolean);
    const pairs = parts.map((p) => {
      const at = p.indexOf('=');
      return at > 0 ? [`context.${p.slice(0, at).trim()}`, p.slice(at + 1).trim()] : null;
    });
    return pairs.includes(null) ? null : pairs;
  };

  const searchQuery = (extra) => {
    const q = new URLSearchParams(query({ ...filter, ...extra }).replace(/^\?/, ''));
    for (const [k, v] of contextFilters) q.append(k, v);
    const text = q.toString();
    return text ? `?${text}` : '';
  };

  const apply = () => {
    filter.workflow_id = workflow.value;
    filter.created_after = fromLocal(after.value);
    filter.created_before = fromLocal(before.value);
    filter.workflow_version = version.value;
    filter.trigger = trigger.value;
    const pairs = contextPairs();
    if (pairs === null) context.setAttribute('aria-invalid', 'true');
    else context.removeAttribute('aria-invalid');
    if (pairs) contextFilters.splice(0, contextFilters.length, ...pairs);
    fillStatus();
    history.replaceState(null, '', `#/runs${searchQuery({})}`);
    pages.reset();
    seen = '';
    countsAt = 0;
    refresh();
  };
  status.addEventListener('change', () => { filter.status = status.value; apply(); });
  for (const el of [workflow, after, before, version, trigger, context]) el.addEventListener('change', apply);

  const labelled = (id, label, el) => h('span', { class: 'filter' }, h('label', { for: id }, label), el);
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Runs')),
    h('div', { class: 'filters' },
      labelled('filter-workflow', 'Workflow', workflow), labelled('filter-status', 'Status', status),
      labelled('filter-after', 'Created after', after), labelled('filter-before', 'before', before),
      labelled('filter-version', 'Version', version), labelled('filter-trigger', 'Trigger', trigger),
      labelled('filter-context', 'Context', context),
      h('small', { id: 'filter-context-hint', class: 'hint' }, 'key=value (dotted keys for nested members; & for several)')),
    counts,
    slot,
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'runs' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Run'), h('th', {}, 'Workflow'), h('th', {}, 'Status'),
        h('th', {}, 'Created'), h('th', { class: 'num' }, 'Duration'), h('th', {}, 'Current step'))),
      body)),
    pages.el,
  );

  // A chip adds its status to the filter, or takes it out again (several may be chosen).
  const chip = (st, n) => {
    const on = statuses().includes(st);
    return h('button', {
      type: 'button', class: ['chip', `st-${st.toLowerCase()}`, on && 'active'], 'data-status': st,
      'aria-pressed': on ? 'true' : 'false',
      onclick: () => {
        const chosen = statuses();
        filter.status = (on ? chosen.filter((x) => x !== st) : [...chosen, st]).join(',');
        apply();
      },
    }, h('span', { class: 'chip-label' }, st), h('span', { class: 'chip-n' }, n));
  };

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
    const answer = await get(`/v1/runs/counts${searchQuery({ status: '' })}`);
    fill(counts, STATUSES.map((st) => chip(st, String(answer.counts[st] || 0))));
  };

  const refresh = async () => {
    try {
      const page = await get(`/v1/runs${searchQuery({ view: 'summary', limit: 25, cursor: pages.cursor() })}`);
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
