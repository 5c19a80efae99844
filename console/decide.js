// Decisions on a run: approve or reject a waiting step (with a comment and the input form
// built from its `approval.input_schema`), cancel, retry. Only shown to admin tokens; every
// action is a /v1 call whose error answer is shown with its pointers.

import { post } from './api.js';
import { h, act, confirmDialog } from './util.js';
import { schemaForm, markInvalid } from './form.js';

const path = (run, what) => `/v1/runs/${encodeURIComponent(run.id)}/${what}`;

/** The approval form of one waiting step; `done()` after a decision was recorded. */
export function approvalForm(run, step, def, done) {
  const schema = def && def.approval ? def.approval.input_schema : undefined;
  const input = schemaForm(schema);
  const comment = h('textarea', { id: `comment-${step.name}`, name: 'comment', rows: 2, placeholder: 'Why (optional)' });
  const slot = h('div', { class: 'slot' });
  const approve = h('button', { type: 'submit', class: 'primary', 'data-action': 'approve' }, 'Approve');
  const reject = h('button', { type: 'button', class: 'danger', 'data-action': 'reject' }, 'Reject');
  const form = h('form', {
    class: 'card approval', 'data-step': step.name,
    onsubmit: async (ev) => {
      ev.preventDefault();
      const answer = await act(approve, slot, async () => {
        const body = { step: step.name };
        if (comment.value.trim()) body.comment = comment.value.trim();
        const value = input.read();
        if (value !== undefined && (Object.keys(value).length || schema)) body.input = value;
        return post(path(run, 'approve'), body);
      }, (e) => markInvalid(form, e));
      if (answer) {
        markInvalid(form, null);
        done(answer);
      }
    },
  },
  h('h2', {}, `Approval: ${step.name}`),
  h('p', { class: 'muted' }, 'The run waits for a decision on this step.'),
  input.el,
  h('label', { for: `comment-${step.name}` }, 'Comment'), comment,
  h('div', { class: 'actions' }, reject, approve),
  slot);
  reject.addEventListener('click', async () => {
    const ok = await confirmDialog(`Reject ${step.name}?`, 'The run ends FAILED.', 'Reject', true);
    if (!ok) return;
    const body = { step: step.name };
    if (comment.value.trim()) body.comment = comment.value.trim();
    const answer = await act(reject, slot, () => post(path(run, 'reject'), body));
    if (answer) done(answer);
  });
  return form;
}

/** The form that sends the event an `event` step waits for; its data is checked against
 * the step's `schema` by the server (a 400 shows its pointers). */
export function eventForm(run, step, def, done) {
  const name = step.waiting && step.waiting.name;
  const schema = def && def.input ? def.input.schema : undefined;
  const input = schemaForm(schema);
  const slot = h('div', { class: 'slot' });
  const send = h('button', { type: 'submit', class: 'primary', 'data-action': 'send-event' }, 'Send event');
  const form = h('form', {
    class: 'card approval event-form', 'data-step': step.name,
    onsubmit: async (ev) => {
      ev.preventDefault();
      const answer = await act(send, slot, () => post(path(run, `events/${encodeURIComponent(name)}`), { data: input.read() ?? null }),
        (e) => markInvalid(form, e));
      if (answer) {
        markInvalid(form, null);
        done(answer);
      }
    },
  },
  h('h2', {}, `Event: ${name}`),
  h('p', { class: 'muted' }, `Step ${step.name} waits for POST /v1/runs/${run.id}/events/${name}.`),
  input.el,
  h('div', { class: 'actions' }, send),
  slot);
  return form;
}

/** Cancel and retry buttons for the run's state. */
export function runActions(run, slot, done) {
  const out = [];
  const terminal = ['SUCCEEDED', 'FAILED', 'CANCELED'].includes(run.status);
  if (!terminal) {
    const cancel = h('button', { type: 'button', class: 'danger', 'data-action': 'cancel' }, 'Cancel run');
    cancel.addEventListener('click', async () => {
      const ok = await confirmDialog('Cancel this run?', 'Steps in flight are aborted; the run ends CANCELED.', 'Cancel run', true);
      if (!ok) return;
      const answer = await act(cancel, slot, () => post(path(run, 'cancel')));
      if (answer) done(answer);
    });
    out.push(cancel);
  }
  if (run.status === 'FAILED') {
    const retry = h('button', { type: 'button', class: 'primary', 'data-action': 'retry' }, 'Retry from the failed step');
    retry.addEventListener('click', async () => {
      const answer = await act(retry, slot, () => post(path(run, 'retry')));
      if (answer) done(answer);
    });
    out.push(retry);
  }
  return out;
}
