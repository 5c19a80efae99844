// Re-running a finished run with edits (POST /v1/runs/{id}/retry): from any step, with
// context members set, on another version, with a reason; and the run's re-run history,
// each earlier attempt of the steps it reset kept as it was. The server checks the
// request; its answer (with a pointer per problem) is shown and the fields it names marked.

import { get, post } from './api.js';
import { h, when, badge, highlight, act } from './util.js';
import { markInvalid } from './form.js';

/** A JSON object typed into `area`: `{ value }`, `{ value: undefined }` when empty, or `{ error }`. */
function objectIn(area) {
  const text = area.value.trim();
  if (!text || text === '{}') return { value: undefined };
  try {
    const value = JSON.parse(text);
    if (!value || typeof value !== 'object' || Array.isArray(value)) return { error: 'Context members must be a JSON object ({…}).' };
    return { value };
  } catch (e) {
    return { error: `Not valid JSON: ${e.message}` };
  }
}

/** The re-run form of a finished run; `done(run)` once the server accepted it. */
export function rerunForm(run, slot, done, cancel) {
  const failed = run.steps.find((st) => st.status === 'FAILED' || st.status === 'CANCELED');
  const fromStep = h('select', { id: 'rerun-from', name: 'from_step', 'data-pointer': '/from_step' },
    failed ? h('option', { value: '' }, `the first failed step (${failed.name})`) : null,
    run.steps.map((st) => h('option', { value: st.name }, `${st.name} (${st.status.toLowerCase()})`)));
  const version = h('select', { id: 'rerun-version', name: 'version', 'data-pointer': '/version' },
    h('option', { value: '' }, `v${run.workflow_version} (this run's)`));
  const context = h('textarea', {
    id: 'rerun-context', name: 'context', rows: 4, class: 'mono', spellcheck: 'false',
    'data-pointer': '/context', placeholder: '{"key": "new value"}', 'aria-describedby': 'rerun-context-check',
  });
  const check = h('p', { id: 'rerun-context-check', class: 'json-check', 'aria-live': 'polite' },
    'Members set in the context (merged at the top level); empty: unchanged.');
  const reason = h('input', { id: 'rerun-reason', name: 'reason', type: 'text', autocomplete: 'off', placeholder: 'Why (kept in the history)' });
  const submit = h('button', { type: 'submit', class: 'primary', 'data-action': 'rerun-submit' }, 'Run again');
  const close = h('button', { type: 'button', class: 'secondary', onclick: cancel }, 'Close');
  const validate = () => {
    const r = objectIn(context);
    check.textContent = r.error || 'Members set in the context (merged at the top level); empty: unchanged.';
    check.classList.toggle('bad', Boolean(r.error));
    submit.disabled = Boolean(r.error);
    return r;
  };
  context.addEventListener('input', validate);
  get(`/v1/workflows/${encodeURIComponent(run.workflow_id)}/versions`).then((page) => {
    const others = page.items.filter((v) => v.version !== run.workflow_version);
    version.append(...others.map((v) => h('option', { value: v.version }, `v${v.version}`)));
  }).catch(() => { /* the run's own version stays the only choice */ });
  const form = h('form', {
    class: 'card rerun', id: 'rerun-form',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const r = validate();
      if (r.error) return;
      const body = {};
      if (fromStep.value) body.from_step = fromStep.value;
      if (version.value) body.version = Number(version.value);
      if (r.value) body.context = r.value;
      if (reason.value.trim()) body.reason = reason.value.trim();
      const answer = await act(submit, slot, () => post(`/v1/runs/${encodeURIComponent(run.id)}/retry`, body),
        (e) => markInvalid(form, e));
      if (answer) done(answer);
    },
  },
  h('h2', {}, 'Run again'),
  h('p', { class: 'muted' }, 'Steps before the chosen one keep their outputs; it and everything after it run again. Earlier attempts stay in the history below.'),
  h('div', { class: 'row' }, h('label', { for: 'rerun-from' }, 'From step'), fromStep),
  h('div', { class: 'row' }, h('label', { for: 'rerun-version' }, 'Version'), version),
  h('label', { for: 'rerun-context' }, 'Context members'), context, check,
  h('label', { for: 'rerun-reason' }, 'Reason'), reason,
  h('div', { class: 'actions' }, close, submit),
  slot);
  return form;
}

function previousSteps(steps) {
  if (!steps.length) return h('p', { class: 'muted' }, 'No step had run.');
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Step'), h('th', {}, 'Was'), h('th', { class: 'num' }, 'Attempts'), h('th', {}, 'Error'))),
    h('tbody', {}, steps.map((st) => h('tr', { 'data-step': st.name },
      h('td', {}, st.name), h('td', {}, badge(st.status)),
      h('td', { class: 'num' }, (st.attempts || []).length),
      h('td', { class: 'error-text' }, st.error || ''))))));
}

/** The run's re-runs, newest first: who, when, why, from where, and what came before. */
export function rerunHistory(run) {
  const retries = run.retries || [];
  if (!retries.length) return null;
  return h('section', { class: 'card', id: 'reruns' },
    h('h2', {}, `Re-runs (${retries.length})`),
    h('ol', { class: 'reruns', reversed: true }, [...retries].reverse().map((r) => h('li', { 'data-n': r.n },
      h('p', {}, h('strong', {}, `#${r.n}`), ` by ${r.by} `, when(r.at), ` from step `, h('code', {}, r.from_step),
        r.version !== r.from_version ? ` on v${r.version} (was v${r.from_version})` : '',
        ' · it had ', badge(r.previous_status)),
      r.reason ? h('blockquote', {}, r.reason) : null,
      r.previous_error ? h('p', { class: 'error-text' }, r.previous_error) : null,
      r.context ? h('details', {}, h('summary', {}, 'Context members set'), highlight(r.context)) : null,
      h('details', {}, h('summary', {}, `Steps as they were (${r.steps.length})`), previousSteps(r.steps),
        r.trimmed && r.trimmed.length ? h('p', { class: 'muted' }, `Left out to bound the history: ${r.trimmed.join(', ')}.`) : null)))));
}

