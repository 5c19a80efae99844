// Workflows: the list (by name prefix, archived ones on request), and one workflow's
// definition (highlighted), its versions with a side-by-side diff of any two, rollback
// (confirmed), archiving (confirmed), and starting a run with a context that is checked
// as a JSON object before it is sent.

import { get, post, del, query } from './api.js';
import { h, fill, when, highlight, report, every, confirmDialog, act } from './util.js';
import { sideBySide } from './diff.js';

const META = ['version', 'created_at', 'created_by', 'restored_from', 'archived_at', 'archived_by'];

/** The definition as submitted: the served version without its metadata. */
function definition(version) {
  const out = {};
  for (const [k, v] of Object.entries(version)) if (!META.includes(k)) out[k] = v;
  return out;
}

function pager(onChange) {
  const stack = [];
  let next = null;
  const prev = h('button', { type: 'button', class: 'secondary', disabled: true, onclick: () => { stack.pop(); onChange(); } }, '← Newer');
  const more = h('button', { type: 'button', class: 'secondary', disabled: true, onclick: () => { stack.push(next); onChange(); } }, 'Older →');
  return {
    el: h('div', { class: 'pager' }, prev, more),
    cursor: () => stack[stack.length - 1],
    page: () => stack.length + 1,
    reset() { stack.length = 0; },
    set(nextCursor) {
      next = nextCursor;
      prev.disabled = stack.length === 0;
      more.disabled = !nextCursor;
    },
  };
}

export { pager };

/** `#/workflows?name_prefix=&archived=true`. */
export function workflowList(root, params, ctx) {
  const slot = h('div', { class: 'slot' });
  const body = h('tbody');
  const filter = { name_prefix: params.get('name_prefix') || '', archived: params.get('archived') === 'true' ? 'true' : '' };
  const prefix = h('input', {
    id: 'filter-name', name: 'name_prefix', type: 'search', autocomplete: 'off', placeholder: 'name starts with…',
    value: filter.name_prefix,
  });
  const archived = h('input', { id: 'filter-archived', name: 'archived', type: 'checkbox', checked: Boolean(filter.archived) });
  let seen = '';
  const pages = pager(() => refresh());
  const apply = () => {
    filter.name_prefix = prefix.value;
    filter.archived = archived.checked ? 'true' : '';
    history.replaceState(null, '', `#/workflows${query(filter)}`);
    pages.reset();
    seen = '';
    refresh();
  };
  prefix.addEventListener('input', apply);
  archived.addEventListener('change', apply);
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Workflows')),
    h('div', { class: 'filters' }, h('label', { for: 'filter-name' }, 'Name'), prefix,
      h('label', { for: 'filter-archived' }, archived, ' archived too')),
    slot,
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'workflows' },
      h('thead', {}, h('tr', {},
        h('th', {}, 'Name'), h('th', {}, 'Id'), h('th', { class: 'num' }, 'Version'),
        h('th', {}, 'Updated'), h('th', {}, 'By'), h('th', { class: 'wide' }, 'Description'))),
      body)),
    pages.el,
  );
  const refresh = async () => {
    try {
      const page = await get(`/v1/workflows${query({ ...filter, limit: 50, cursor: pages.cursor() })}`);
      report(slot, null);
      pages.set(page.next_cursor);
      const text = JSON.stringify(page.items);
      if (text === seen) return;
      seen = text;
      fill(body, page.items.length ? page.items.map((wf) => h('tr', { 'data-id': wf.id, 'data-archived': wf.archived_at ? '' : null },
        h('td', {}, h('a', { href: `#/workflows/${encodeURIComponent(wf.id)}` }, wf.name),
          wf.archived_at ? [' ', h('span', { class: 'badge archived', title: `archived by ${wf.archived_by}` }, 'ARCHIVED')] : null),
        h('td', { class: 'mono' }, wf.id),
        h('td', { class: 'num' }, `v${wf.version}`),
        h('td', {}, when(wf.created_at)),
        h('td', {}, wf.created_by || '—'),
        h('td', { class: 'wide clip' }, wf.description || ''))) : h('tr', {}, h('td', { colspan: 6, class: 'muted' },
        filter.name_prefix ? 'No workflow name starts with that.' : 'No workflows yet. Create one with POST /v1/workflows.')));
    } catch (e) {
      report(slot, e);
    }
  };
  return every(3000, refresh);
}

function startForm(id, slot) {
  const context = h('textarea', {
    id: 'run-context', name: 'context', rows: 6, class: 'mono', spellcheck: 'false',
    'aria-describedby': 'context-check',
  }, '{}');
  const check = h('p', { id: 'context-check', class: 'json-check', 'aria-live': 'polite' }, 'A JSON object.');
  const version = h('select', { id: 'run-version', name: 'version' });
  const button = h('button', { type: 'submit', class: 'primary', id: 'start-run' }, 'Start run');
  const parse = () => {
    try {
      const value = JSON.parse(context.value);
      if (!value || typeof value !== 'object' || Array.isArray(value)) return { error: 'The context must be a JSON object ({…}).' };
      return { value };
    } catch (e) {
      return { error: `Not valid JSON: ${e.message}` };
    }
  };
  const validate = () => {
    const r = parse();
    check.textContent = r.error || 'A JSON object.';
    check.classList.toggle('bad', Boolean(r.error));
    if (r.error) context.setAttribute('aria-invalid', 'true');
    else context.removeAttribute('aria-invalid');
    button.disabled = Boolean(r.error);
    return r;
  };
  context.addEventListener('input', validate);
  const form = h('form', {
    class: 'card start', id: 'start-form',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const r = validate();
      if (r.error) return;
      const body = { workflow_id: id, context: r.value };
      if (version.value) body.version = Number(version.value);
      const run = await act(button, slot, () => post('/v1/runs', body));
      if (run) location.hash = `#/runs/${encodeURIComponent(run.id)}`;
    },
  },
  h('h2', {}, 'Start a run'),
  h('div', { class: 'row' }, h('label', { for: 'run-version' }, 'Version'), version),
  h('label', { for: 'run-context' }, 'Context'), context, check,
  h('div', { class: 'actions' }, button),
  slot);
  const setVersions = (versions) => {
    const chosen = version.value;
    fill(version, h('option', { value: '' }, 'latest'),
      versions.map((v) => h('option', { value: v.version, selected: String(v.version) === chosen }, `v${v.version}`)));
  };
  return { el: form, setVersions };
}

/** `#/workflows/{id}`. */
export function workflowPage(root, id, params, ctx) {
  const slot = h('div', { class: 'slot' });
  const head = h('div', { class: 'page-head' }, h('h1', {}, id));
  const defBox = h('section', { class: 'card', id: 'definition' });
  const versionsBox = h('section', { class: 'card', id: 'versions' });
  const diffBox = h('div', { id: 'diff' });
  const startSlot = h('div', { class: 'slot' });
  const start = ctx.canWrite ? startForm(id, startSlot) : null;
  const archiveSlot = h('div', { class: 'slot' });
  root.append(head, slot, archiveSlot, h('div', { class: 'split' }, h('div', {}, start && start.el, defBox), versionsBox));
  let versions = [];
  let archived = null;
  let shown = null;
  let pick = { a: null, b: null };
  let seen = '';

  const showDefinition = () => {
    const v = versions.find((x) => x.version === shown) || versions[0];
    const select = h('select', {
      id: 'def-version', 'aria-label': 'Version shown',
      onchange: (ev) => { shown = Number(ev.target.value); showDefinition(); },
    }, versions.map((x) => h('option', { value: x.version, selected: x.version === v.version }, `v${x.version}`)));
    fill(defBox, h('div', { class: 'section-head' }, h('h2', {}, 'Definition'), select), highlight(definition(v)));
  };

  const showDiff = () => {
    const a = versions.find((x) => x.version === pick.a);
    const b = versions.find((x) => x.version === pick.b);
    if (!a || !b) { diffBox.replaceChildren(); return; }
    const text = (v) => JSON.stringify(definition(v), null, 2);
    fill(diffBox, sideBySide(text(a), text(b), `v${a.version}`, `v${b.version}`));
  };

  const rollback = async (button, v) => {
    const ok = await confirmDialog(`Roll back to v${v.version}?`,
      `This adds version v${versions[0].version + 1} with the definition of v${v.version}. History is kept.`, 'Roll back');
    if (!ok) return;
    await act(button, slot, () => post(`/v1/workflows/${encodeURIComponent(id)}/rollback`, { version: v.version }));
    await refresh();
  };

  const showVersions = () => {
    const canChange = ctx.canWrite && !archived;
    const radio = (side, v) => h('input', {
      type: 'radio', name: `diff-${side}`, value: v.version, checked: pick[side] === v.version,
      'aria-label': `Compare v${v.version} as ${side === 'a' ? 'left' : 'right'}`,
      onchange: () => { pick[side] = v.version; showDiff(); },
    });
    fill(versionsBox,
      h('div', { class: 'section-head' }, h('h2', {}, 'Versions'), h('span', { class: 'muted' }, 'pick two to compare')),
      h('div', { class: 'table-wrap' }, h('table', { class: 'list' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Version'), h('th', {}, 'Created'), h('th', {}, 'By'),
          h('th', {}, 'Left'), h('th', {}, 'Right'), canChange ? h('th', {}, '') : null)),
        h('tbody', {}, versions.map((v, i) => h('tr', { 'data-version': v.version },
          h('td', {}, `v${v.version}`, v.restored_from ? h('span', { class: 'muted' }, ` (rollback of v${v.restored_from})`) : null),
          h('td', {}, when(v.created_at)),
          h('td', {}, v.created_by || '—'),
          h('td', {}, radio('a', v)),
          h('td', {}, radio('b', v)),
          canChange ? h('td', {}, i === 0 ? h('span', { class: 'muted' }, 'current') : (() => {
            const b = h('button', { type: 'button', class: 'secondary small', 'data-rollback': v.version }, 'Roll back');
            b.addEventListener('click', () => rollback(b, v));
            return b;
          })()) : null))))),
      diffBox);
    showDiff();
  };

  const archive = async (button) => {
    const ok = await confirmDialog(`Archive ${versions[0].name}?`,
      'It leaves the lists and starts no more runs. Its versions and runs stay readable.', 'Archive', true);
    if (!ok) return;
    const done = await act(button, archiveSlot, async () => { await del(`/v1/workflows/${encodeURIComponent(id)}`); return true; });
    if (done) { seen = ''; await refresh(); }
  };

  const refresh = async () => {
    try {
      const [page, current] = await Promise.all([
        get(`/v1/workflows/${encodeURIComponent(id)}/versions`),
        get(`/v1/workflows/${encodeURIComponent(id)}`),
      ]);
      report(slot, null);
      const text = JSON.stringify([page.items, current.archived_at]);
      if (text === seen) return;
      archived = current.archived_at ? { at: current.archived_at, by: current.archived_by } : null;
      const grew = versions.length && page.items.length > versions.length;
      seen = text;
      versions = page.items;
      const latest = versions[0];
      if (shown === null || grew) shown = latest.version;
      if (pick.b === null || grew) pick = { a: versions[1] ? versions[1].version : null, b: latest.version };
      const archiveButton = ctx.canWrite && !archived
        ? h('button', { type: 'button', class: 'danger small', 'data-action': 'archive' }, 'Archive') : null;
      if (archiveButton) archiveButton.addEventListener('click', () => archive(archiveButton));
      fill(head, h('div', { class: 'section-head' }, h('h1', {}, latest.name,
        archived ? [' ', h('span', { class: 'badge archived' }, 'ARCHIVED')] : null), archiveButton),
        h('p', { class: 'muted' }, h('span', { class: 'mono' }, latest.id), ` · v${latest.version} · `,
          h('a', { href: `#/runs?workflow_id=${encodeURIComponent(id)}` }, 'Runs of this workflow')),
        archived ? h('p', { class: 'card notice', id: 'archived' }, `Archived by ${archived.by} `, when(archived.at),
          ': it starts no more runs and takes no new versions.') : null,
        latest.description ? h('p', {}, latest.description) : null);
      if (start) start.el.hidden = Boolean(archived);
      showDefinition();
      showVersions();
      if (start) start.setVersions(versions);
    } catch (e) {
      report(slot, e);
    }
  };
  return every(4000, refresh);
}
