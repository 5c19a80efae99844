// Schedules and webhook triggers (DESIGN §10): what starts runs besides a person. Schedules
// show their next tick and last run, and admins pause, resume, run one now, delete, or
// create one (the server checks the cron, time zone and workflow and answers with
// pointers, marked on the form). Triggers show the URL to give a sender, how deliveries
// prove themselves, the filter and the context templates. Both lists re-read every 2.5 s
// while visible (a schedule's next tick moves with every fire).

import { get, post, api, query } from './api.js';
import { h, fill, when, badge, highlight, report, every, act, confirmDialog } from './util.js';
import { markInvalid } from './form.js';

const OVERLAP = ['skip', 'allow', 'cancel_previous'];

/** A JSON object typed into a textarea, or an error naming what is wrong. */
function jsonObject(text) {
  if (!text.trim()) return { value: undefined };
  try {
    const value = JSON.parse(text);
    if (!value || typeof value !== 'object' || Array.isArray(value)) return { error: 'must be a JSON object ({…})' };
    return { value };
  } catch (e) {
    return { error: `not valid JSON: ${e.message}` };
  }
}

/** Fills a workflow `<select>` with the stored workflows. */
async function workflowOptions(select) {
  const page = await get(`/v1/workflows${query({ limit: 200 })}`);
  const chosen = select.value;
  fill(select, h('option', { value: '' }, 'Pick a workflow'),
    page.items.map((w) => h('option', { value: w.id, selected: w.id === chosen }, `${w.name} (${w.id})`)));
}

function field(id, label, input, hint) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('p', { class: 'hint' }, hint) : null);
}

function scheduleForm(done) {
  const slot = h('div', { class: 'slot' });
  const id = h('input', { type: 'text', id: 'schedule-id', name: 'id', 'data-pointer': '/id', placeholder: 'nightly-backup (optional)', autocomplete: 'off' });
  const workflow = h('select', { id: 'schedule-workflow', name: 'workflow_id', 'data-pointer': '/workflow_id', required: true });
  const cron = h('input', { type: 'text', id: 'schedule-cron', name: 'cron', 'data-pointer': '/cron', class: 'mono', placeholder: '0 2 * * *', required: true, autocomplete: 'off', spellcheck: 'false' });
  const zone = h('input', { type: 'text', id: 'schedule-timezone', name: 'timezone', 'data-pointer': '/timezone', value: 'UTC', autocomplete: 'off', spellcheck: 'false' });
  const overlap = h('select', { id: 'schedule-overlap', name: 'overlap', 'data-pointer': '/overlap' }, OVERLAP.map((o) => h('option', { value: o }, o)));
  const context = h('textarea', { id: 'schedule-context', name: 'context', 'data-pointer': '/context', rows: 3, class: 'mono', spellcheck: 'false', placeholder: '{}' });
  const paused = h('input', { type: 'checkbox', id: 'schedule-paused', name: 'paused' });
  const button = h('button', { type: 'submit', class: 'primary', id: 'create-schedule' }, 'Create schedule');
  const form = h('form', {
    class: 'card', id: 'schedule-form',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const ctxValue = jsonObject(context.value);
      if (ctxValue.error) {
        report(slot, { problem: { title: 'Context', detail: `The context ${ctxValue.error}.`, errors: [{ pointer: '/context', message: ctxValue.error }] } });
        markInvalid(form, { problem: { errors: [{ pointer: '/context' }] } });
        return;
      }
      const body = { workflow_id: workflow.value, cron: cron.value.trim(), timezone: zone.value.trim() || 'UTC', overlap: overlap.value };
      if (id.value.trim()) body.id = id.value.trim();
      if (ctxValue.value) body.context = ctxValue.value;
      if (paused.checked) body.paused = true;
      const created = await act(button, slot, () => post('/v1/schedules', body), (e) => markInvalid(form, e));
      if (created) {
        markInvalid(form, null);
        form.reset();
        zone.value = 'UTC';
        done(created);
      }
    },
  },
  h('h2', {}, 'New schedule'),
  h('div', { class: 'grid-form' },
    field('schedule-workflow', 'Workflow', workflow),
    field('schedule-cron', 'Cron', cron, 'Five fields, six with seconds first, or @hourly, @daily, …'),
    field('schedule-timezone', 'Time zone', zone, 'An IANA name: UTC, Europe/Berlin, America/New_York'),
    field('schedule-overlap', 'When the last run is still active', overlap),
    field('schedule-id', 'Id', id),
    h('div', { class: 'field check' }, paused, h('label', { for: 'schedule-paused' }, 'Start paused'))),
  field('schedule-context', 'Context of its runs', context),
  h('div', { class: 'actions' }, button),
  slot);
  return { el: form, workflows: () => workflowOptions(workflow) };
}

/** `#/schedules`. */
export function scheduleList(root, params, ctx) {
  const slot = h('div', { class: 'slot' });
  const body = h('tbody');
  let seen = '';
  const form = ctx.canWrite ? scheduleForm(() => { seen = ''; refresh(); }) : null;

  const action = (s, verb, label, cls = 'secondary') => {
    const b = h('button', { type: 'button', class: [cls, 'small'], 'data-action': verb }, label);
    b.addEventListener('click', async () => {
      const path = `/v1/schedules/${encodeURIComponent(s.id)}`;
      if (verb === 'delete') {
        const ok = await confirmDialog(`Delete schedule ${s.id}?`, 'It stops firing; the runs it started stay.', 'Delete', true);
        if (!ok) return;
        await act(b, slot, () => api('DELETE', path));
      } else if (verb === 'trigger') {
        const run = await act(b, slot, () => post(`${path}/trigger`));
        if (run) location.hash = `#/runs/${encodeURIComponent(run.id)}`;
        return;
      } else {
        await act(b, slot, () => post(`${path}/${verb}`));
      }
      seen = '';
      refresh();
    });
    return b;
  };

  const row = (s) => h('tr', { 'data-id': s.id, 'data-paused': s.paused ? 'true' : 'false' },
    h('td', { class: 'mono' }, s.id),
    h('td', {}, h('a', { href: `#/workflows/${encodeURIComponent(s.workflow_id)}` }, s.workflow_id)),
    h('td', {}, h('code', {}, s.cron), h('span', { class: 'muted' }, ` ${s.timezone}`)),
    h('td', {}, s.overlap),
    h('td', { class: 'next' }, s.paused ? badge('PAUSED') : when(s.next_fire_at)),
    h('td', {}, s.last_run_id
      ? [when(s.last_fire_time), ' ', h('a', { class: 'mono', href: `#/runs/${encodeURIComponent(s.last_run_id)}` }, s.last_run_id)]
      : h('span', { class: 'muted' }, 'never')),
    ctx.canWrite ? h('td', { class: 'actions-cell' },
      s.paused ? action(s, 'resume', 'Resume', 'primary') : action(s, 'pause', 'Pause'),
      action(s, 'trigger', 'Run now'),
      action(s, 'delete', 'Delete', 'danger')) : null);

  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Schedules'),
      h('p', { class: 'muted' }, 'Cron schedules start runs on their ticks; each tick fires once across all servers.')),
    slot,
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'schedules' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Schedule'), h('th', {}, 'Workflow'), h('th', {}, 'Cron'),
        h('th', {}, 'Overlap'), h('th', {}, 'Next tick'), h('th', {}, 'Last run'), ctx.canWrite ? h('th', {}, '') : null)),
      body)),
    form && form.el);
  if (form) form.workflows().catch((e) => report(slot, e));

  const refresh = async () => {
    try {
      const page = await get('/v1/schedules');
      report(slot, null);
      const text = JSON.stringify(page.items);
      if (text === seen) return;
      seen = text;
      fill(body, page.items.length ? page.items.map(row)
        : h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No schedules yet.')));
    } catch (e) {
      report(slot, e);
    }
  };
  return every(2500, refresh);
}

function triggerForm(done) {
  const slot = h('div', { class: 'slot' });
  const name = h('input', { type: 'text', id: 'trigger-name', name: 'name', 'data-pointer': '/name', placeholder: 'github-push', required: true, autocomplete: 'off' });
  const workflow = h('select', { id: 'trigger-workflow', name: 'workflow_id', 'data-pointer': '/workflow_id', required: true });
  const secret = h('input', { type: 'password', id: 'trigger-secret', name: 'secret', 'data-pointer': '/secret', autocomplete: 'new-password' });
  const header = h('select', { id: 'trigger-header', name: 'secret_header', 'data-pointer': '/secret_header' },
    h('option', { value: 'X-Hub-Signature-256' }, 'X-Hub-Signature-256 (GitHub)'),
    h('option', { value: 'X-Gitlab-Token' }, 'X-Gitlab-Token (GitLab)'));
  const filter = h('input', { type: 'text', id: 'trigger-filter', name: 'filter', 'data-pointer': '/filter', class: 'mono', placeholder: "request.body.ref == 'refs/heads/main'", autocomplete: 'off', spellcheck: 'false' });
  const context = h('textarea', { id: 'trigger-context', name: 'context', 'data-pointer': '/context', rows: 3, class: 'mono', spellcheck: 'false', placeholder: '{"sha": "{{ request.body.after }}"}' });
  const button = h('button', { type: 'submit', class: 'primary', id: 'create-trigger' }, 'Create trigger');
  const form = h('form', {
    class: 'card', id: 'trigger-form',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const ctxValue = jsonObject(context.value);
      if (ctxValue.error) {
        report(slot, { problem: { title: 'Context', detail: `The context ${ctxValue.error}.`, errors: [{ pointer: '/context', message: ctxValue.error }] } });
        markInvalid(form, { problem: { errors: [{ pointer: '/context' }] } });
        return;
      }
      const body = { name: name.value.trim(), workflow_id: workflow.value };
      if (secret.value) { body.secret = secret.value; body.secret_header = header.value; }
      if (filter.value.trim()) body.filter = filter.value.trim();
      if (ctxValue.value) body.context = ctxValue.value;
      const created = await act(button, slot, () => post('/v1/triggers', body), (e) => markInvalid(form, e));
      if (created) {
        markInvalid(form, null);
        form.reset();
        done(created);
      }
    },
  },
  h('h2', {}, 'New webhook trigger'),
  h('div', { class: 'grid-form' },
    field('trigger-name', 'Name', name, 'Deliveries go to POST /hooks/<name>.'),
    field('trigger-workflow', 'Workflow', workflow),
    field('trigger-secret', 'Secret', secret, 'Without one, deliveries need an admin token.'),
    field('trigger-header', 'Proof', header, 'An HMAC-SHA256 of the body, or the secret itself.'),
    field('trigger-filter', 'Filter', filter, 'An expression over request; false answers 200 without a run.')),
  field('trigger-context', 'Context templates', context, 'An object of templates over request.body, request.headers and request.query.'),
  h('div', { class: 'actions' }, button),
  slot);
  return { el: form, workflows: () => workflowOptions(workflow) };
}

/** `#/triggers`. */
export function triggerList(root, params, ctx) {
  const slot = h('div', { class: 'slot' });
  const body = h('tbody');
  let seen = '';
  const form = ctx.canWrite ? triggerForm(() => { seen = ''; refresh(); }) : null;

  const remove = (t) => {
    const b = h('button', { type: 'button', class: 'danger small', 'data-action': 'delete' }, 'Delete');
    b.addEventListener('click', async () => {
      const ok = await confirmDialog(`Delete trigger ${t.name}?`, 'Deliveries to its URL will answer 404; the runs it started stay.', 'Delete', true);
      if (!ok) return;
      await act(b, slot, () => api('DELETE', `/v1/triggers/${encodeURIComponent(t.name)}`));
      seen = '';
      refresh();
    });
    return b;
  };

  const row = (t) => h('tr', { 'data-id': t.name },
    h('td', { class: 'mono' }, t.name),
    h('td', {}, h('a', { href: `#/workflows/${encodeURIComponent(t.workflow_id)}` }, t.workflow_id)),
    h('td', { class: 'wide' }, h('code', { class: 'url' }, `POST ${location.origin}${t.url}`)),
    h('td', {}, t.has_secret ? h('code', {}, t.secret_header) : h('span', { class: 'muted' }, 'admin token')),
    h('td', { class: 'wide' }, t.filter ? h('code', {}, t.filter) : h('span', { class: 'muted' }, 'every delivery'),
      t.context ? h('details', {}, h('summary', {}, 'Context templates'), highlight(t.context)) : null),
    h('td', {}, when(t.created_at), t.created_by ? h('span', { class: 'muted' }, ` by ${t.created_by}`) : null),
    ctx.canWrite ? h('td', {}, remove(t)) : null);

  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Webhook triggers'),
      h('p', { class: 'muted' }, 'A delivery to a trigger\'s URL starts a run; the run keeps the request it came from.')),
    slot,
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'triggers' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Trigger'), h('th', {}, 'Workflow'), h('th', {}, 'Deliver to'),
        h('th', {}, 'Proof'), h('th', {}, 'Filter'), h('th', {}, 'Created'), ctx.canWrite ? h('th', {}, '') : null)),
      body)),
    form && form.el);
  if (form) form.workflows().catch((e) => report(slot, e));

  const refresh = async () => {
    try {
      const page = await get('/v1/triggers');
      report(slot, null);
      const text = JSON.stringify(page.items);
      if (text === seen) return;
      seen = text;
      fill(body, page.items.length ? page.items.map(row)
        : h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No webhook triggers yet.')));
    } catch (e) {
      report(slot, e);
    }
  };
  return every(2500, refresh);
}

/** What started a run, in a few words for the run's header; `null` for `POST /v1/runs`. */
export function startedBy(run) {
  const t = run.trigger;
  if (!t) return null;
  return t.type === 'schedule'
    ? [' · started by schedule ', h('a', { class: 'mono', href: '#/schedules' }, t.id)]
    : [' · started by webhook ', h('a', { class: 'mono', href: '#/triggers' }, t.name)];
}

/** What started a run (its `trigger` member), for the run page. */
export function triggerPanel(run) {
  const t = run.trigger;
  if (!t) return null;
  if (t.type === 'schedule') {
    return h('section', { class: 'card', id: 'trigger' }, h('h2', {}, 'Started by a schedule'),
      h('p', {}, 'Schedule ', h('a', { class: 'mono', href: '#/schedules' }, t.id), ', tick of ', when(t.fire_time),
        h('span', { class: 'muted' }, ` (${t.fire_time})`)));
  }
  const request = t.request;
  return h('section', { class: 'card', id: 'trigger' }, h('h2', {}, 'Started by a webhook'),
    h('p', {}, 'Trigger ', h('a', { class: 'mono', href: '#/triggers' }, t.name),
      t.delivery ? [', delivery ', h('code', {}, t.delivery)] : null),
    request ? h('details', { id: 'trigger-request' },
      h('summary', {}, `The request (${request.body_bytes} bytes${request.truncated ? ', body cut' : ''}; credentials hidden)`),
      h('h3', {}, 'Headers'), highlight(request.headers),
      Object.keys(request.query || {}).length ? [h('h3', {}, 'Query'), highlight(request.query)] : null,
      h('h3', {}, 'Body'), highlight(request.body)) : null);
}
