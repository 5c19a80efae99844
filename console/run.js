// One run: its steps as a DAG colored by status, the selected step's input, output and
// attempts, the context and decisions, its re-run history, and the live log tail. The log
// stream drives the page: `log` events append lines, `status` events re-read the run;
// after a dropped connection the stream resumes after the last line seen (Last-Event-ID).
// A re-run on another version redraws the DAG from that version's steps.

import { get, follow } from './api.js';
import { h, fill, when, badge, duration, between, highlight, report, reportUnexpected } from './util.js';
import { drawDag } from './dag.js';
import { approvalForm, eventForm, runActions } from './decide.js';
import { rerunHistory } from './rerun.js';
import { triggerPanel, startedBy } from './triggers.js';
import { keptUntil } from './server.js';

const TERMINAL = ['SUCCEEDED', 'FAILED', 'CANCELED'];
const MAX_LINES = 2000;

/** ` · kept until …` when retention will delete this finished run. */
function kept(finishedAt) {
  const until = keptUntil(finishedAt);
  return until ? [' · ', until] : null;
}

function field(label, value) {
  return [h('dt', {}, label), h('dd', {}, value)];
}

function attemptsTable(step) {
  if (!step.attempts || !step.attempts.length) return h('p', { class: 'muted' }, 'No attempt yet.');
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list attempts' },
    h('thead', {}, h('tr', {}, h('th', { class: 'num' }, '#'), h('th', {}, 'Started'), h('th', { class: 'num' }, 'Took'),
      h('th', { class: 'num' }, 'HTTP'), h('th', {}, 'Error'), h('th', { class: 'num' }, 'Retry after'))),
    h('tbody', {}, step.attempts.map((a) => h('tr', {},
      h('td', { class: 'num' }, a.attempt),
      h('td', {}, when(a.started_at)),
      h('td', { class: 'num' }, a.finished_at ? duration(between(a.started_at, a.finished_at)) : 'running'),
      h('td', { class: 'num' }, a.http_code || '—'),
      h('td', { class: 'error-text' }, a.error || ''),
      h('td', { class: 'num' }, a.retry_in_ms !== undefined ? duration(a.retry_in_ms) : '—'))))));
}

const MAX_ITEM_ROWS = 200;

function itemsTable(step) {
  if (!step.items) return null;
  const counts = {};
  step.items.forEach((i) => { counts[i.status] = (counts[i.status] || 0) + 1; });
  const summary = Object.entries(counts).map(([s, n]) => `${n} ${s.toLowerCase()}`).join(', ');
  const shown = step.items.filter((i) => i.status !== 'SUCCEEDED' || i.attempts > 1).slice(0, MAX_ITEM_ROWS);
  return [
    h('h3', {}, `Items (${step.items.length})`, h('span', { class: 'muted' }, summary ? ` ${summary}` : '')),
    shown.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'list items' },
      h('thead', {}, h('tr', {}, h('th', { class: 'num' }, 'Index'), h('th', {}, 'Status'), h('th', { class: 'num' }, 'Attempts'), h('th', {}, 'Error'))),
      h('tbody', {}, shown.map((i) => h('tr', {},
        h('td', { class: 'num' }, i.index), h('td', {}, badge(i.status)), h('td', { class: 'num' }, i.attempts),
        h('td', { class: 'error-text' }, i.error || '')))))) : null,
  ];
}

function waitingNote(step) {
  const w = step.waiting;
  if (!w || step.status !== 'WAITING') return null;
  if (w.for === 'timer') return h('p', { class: 'notice' }, 'Waiting until ', when(w.until));
  if (w.for === 'child') return h('p', { class: 'notice' }, 'Waiting for child run ', h('a', { href: `#/runs/${encodeURIComponent(w.run_id)}`, class: 'mono' }, w.run_id));
  if (w.for === 'task') {
    return h('p', { class: 'notice' }, 'Waiting for a worker on queue ',
      h('a', { href: '#/queues', class: 'mono' }, w.queue), ` (task `, h('span', { class: 'mono' }, w.task_id), `, attempt ${w.attempt})`);
  }
  return h('p', { class: 'notice' }, `Waiting for event ${w.name}`, w.until ? [' until ', when(w.until)] : null);
}

function stepDetail(step, def) {
  return [
    h('div', { class: 'section-head' }, h('h2', {}, step.name), badge(step.status)),
    h('dl', { class: 'facts' },
      field('Action', h('code', {}, step.action)),
      field('Started', when(step.started_at)),
      field('Took', step.started_at ? duration(between(step.started_at, step.finished_at)) : '—'),
      step.http_code ? field('HTTP', String(step.http_code)) : null,
      step.waiting_since ? field('Waiting since', when(step.waiting_since)) : null),
    step.error ? h('p', { class: 'error-text', role: 'note' }, step.error) : null,
    waitingNote(step),
    itemsTable(step),
    h('h3', {}, 'Input', h('span', { class: 'muted' }, ' as defined; templates render at run time')),
    def && def.input !== undefined ? highlight(def.input) : h('p', { class: 'muted' }, 'None.'),
    h('h3', {}, 'Output', step.output_truncated ? h('span', { class: 'muted' }, ' (truncated)') : null),
    step.output !== undefined ? highlight(step.output) : h('p', { class: 'muted' }, 'None yet.'),
    h('h3', {}, 'Attempts'), attemptsTable(step),
    def ? h('details', {}, h('summary', {}, 'Step definition'), highlight(def)) : null,
  ];
}

function logLine(e) {
  const t = new Date(e.ts);
  return h('div', { class: ['log-line', `lvl-${e.level}`], 'data-seq': e.seq },
    h('time', { datetime: e.ts, title: t.toISOString() }, t.toISOString().slice(11, 23)),
    h('span', { class: 'lvl' }, e.level),
    e.step ? h('span', { class: 'log-step' }, `[${e.step}]`) : null,
    h('span', { class: 'msg' }, e.message));
}

/** A line on the latest re-run, when there was one. */
function lastRerun(run) {
  const retries = run.retries || [];
  if (!retries.length) return null;
  const r = retries[retries.length - 1];
  return h('p', { class: 'muted', id: 'last-rerun' }, `Run again ${retries.length === 1 ? 'once' : `${retries.length} times`}; the latest by ${r.by} `,
    when(r.at), ` from step ${r.from_step}. Earlier attempts are under Re-runs, below the log.`);
}

/** `#/runs/{id}`. */
export function runPage(root, id, params, ctx) {
  const slot = h('div', { class: 'slot' });
  const actionSlot = h('div', { class: 'slot' });
  const rerunPanel = h('div', { id: 'rerun-panel' });
  const history = h('div', { id: 'history' });
  const head = h('div', { class: 'page-head' }, h('h1', {}, id));
  const actions = h('div', { class: 'actions run-actions' });
  const approvals = h('div', { id: 'approvals' });
  const dagBox = h('div', { class: 'dag-wrap', id: 'dag' });
  const detail = h('section', { class: 'card step-detail', id: 'step-detail', 'aria-live': 'polite' },
    h('p', { class: 'muted' }, 'Select a step to see its input, output and attempts.'));
  const context = h('section', { class: 'card', id: 'context' });
  const origin = h('div', {});
  const decisions = h('section', { class: 'card', id: 'decisions' });
  const streamState = h('span', { class: 'stream-state', id: 'stream-state' }, 'connecting');
  const log = h('div', { class: 'log', id: 'log', role: 'log', 'aria-label': 'Run log', tabindex: 0 });
  root.append(head, slot, actions, actionSlot, rerunPanel,
    h('div', { class: 'split run-split' }, h('section', { class: 'card' }, h('h2', {}, 'Steps'), dagBox),
      h('div', {}, approvals, detail)),
    h('section', { class: 'card' }, h('div', { class: 'section-head' }, h('h2', {}, 'Log'), streamState), log),
    h('div', { class: 'split' }, context, decisions), origin, history);

  let run = null;
  let defs = new Map();
  let dag = null;
  let selected = params.get('step');
  let shownDetail = '';
  let waitingKey = null;
  let actionsFor = null;
  let stop = () => {};
  let streaming = false;
  let lastSeq = null;
  let closed = false;
  let pending = null;
  let shownHistory = -1;
  let defsVersion = null;

  const select = (name) => {
    selected = name;
    shownDetail = '';
    render();
  };

  const loadDefs = async () => {
    defsVersion = run.workflow_version;
    try {
      const wf = await get(`/v1/workflows/${encodeURIComponent(run.workflow_id)}?version=${run.workflow_version}`);
      defs = new Map((wf.steps || []).map((st) => [st.name, st]));
    } catch (e) {
      report(slot, e);
    }
  };

  const render = () => {
    if (!run) return;
    if (defsVersion !== null && run.workflow_version !== defsVersion) {
      loadDefs().then(() => { dag = null; shownDetail = ''; render(); }).catch(reportUnexpected);
      return;
    }
    const took = run.started_at
      ? `${run.finished_at ? 'took' : 'running for'} ${duration(between(run.started_at, run.finished_at))}` : 'not started';
    fill(head, h('h1', {}, h('span', { class: 'mono' }, run.id), ' ', badge(run.status)),
      h('p', { class: 'muted' }, 'Workflow ', h('a', { href: `#/workflows/${encodeURIComponent(run.workflow_id)}` }, run.workflow_id),
        ` v${run.workflow_version} · created `, when(run.created_at), ` · ${took}`, startedBy(run),
        run.parent_run_id ? [' · child of ', h('a', { href: `#/runs/${encodeURIComponent(run.parent_run_id)}`, class: 'mono', id: 'parent-run' }, run.parent_run_id)] : null,
        TERMINAL.includes(run.status) ? kept(run.finished_at) : null),
      run.error ? h('p', { class: 'error-text' }, run.error) : null,
      lastRerun(run));
    if (ctx.canWrite && run.status !== actionsFor) {
      actionsFor = run.status;
      rerunPanel.replaceChildren();
      fill(actions, runActions(run, actionSlot, accept, rerunPanel));
    }
    const waiting = run.steps.filter((st) => st.status === 'WAITING_APPROVAL'
      || (st.status === 'WAITING' && st.waiting && st.waiting.for === 'event'));
    const parked = ['WAITING_APPROVAL', 'WAITING'].includes(run.status);
    const key = parked ? waiting.map((st) => `${st.name}:${st.status}`).join(',') : '';
    if (key !== waitingKey) {
      waitingKey = key;
      fill(approvals, key ? waiting.map((st) => {
        const isEvent = st.status === 'WAITING';
        if (!ctx.canWrite) {
          return h('p', { class: 'card notice' }, isEvent ? `Waiting for event ${st.waiting.name} (${st.name}).` : `Waiting for an approval of ${st.name}.`);
        }
        return isEvent ? eventForm(run, st, defs.get(st.name), accept) : approvalForm(run, st, defs.get(st.name), accept);
      }) : null);
    }
    const byName = new Map(run.steps.map((st) => [st.name, st]));
    if (!dag) {
      const steps = defs.size ? [...defs.values()] : run.steps.map((st) => ({ name: st.name }));
      dag = drawDag(steps, select);
      fill(dagBox, dag.el);
    }
    dag.update(byName, selected);
    const step = byName.get(selected);
    if (step) {
      const text = JSON.stringify(step);
      if (text !== shownDetail) {
        shownDetail = text;
        fill(detail, stepDetail(step, defs.get(step.name)));
      }
    }
    fill(context, h('h2', {}, 'Context'), highlight(run.context));
    if (run.trigger && !origin.childElementCount) fill(origin, triggerPanel(run));
    fill(decisions, h('h2', {}, 'Decisions'), run.approvals.length ? h('ul', { class: 'decisions' }, run.approvals.map((a) => h('li', {},
      badge(a.decision === 'approved' ? 'APPROVED' : 'REJECTED'), ' ', h('strong', {}, a.step), ` by ${a.by} `, when(a.at),
      a.comment ? h('blockquote', {}, a.comment) : null,
      a.input ? highlight(a.input) : null))) : h('p', { class: 'muted' }, 'None.'));
    const historyKey = (run.retries || []).length;
    if (historyKey !== shownHistory) {
      shownHistory = historyKey;
      fill(history, rerunHistory(run));
    }
    if (!TERMINAL.includes(run.status) && !streaming && !closed) startStream();
  };

  const accept = (next) => {
    run = next;
    render();
    refreshSoon();
  };

  const refresh = async () => {
    try {
      run = await get(`/v1/runs/${encodeURIComponent(id)}`);
      report(slot, null);
      render();
    } catch (e) {
      report(slot, e);
    }
  };

  const refreshSoon = () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh(); }, 120);
  };

  const append = (entry) => {
    // No de-duplication: the stream resumes after Last-Event-ID, so each entry comes once.
    lastSeq = entry.seq;
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 24;
    log.append(logLine(entry));
    while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  };

  const startStream = () => {
    streaming = true;
    stop = follow(`/v1/runs/${encodeURIComponent(id)}/logs/stream`, {
      lastEventId: lastSeq,
      onEvent: (event, data) => {
        if (event === 'log') append(data);
        else if (event === 'status' || event === 'end') refreshSoon();
      },
      onState: (state) => {
        if (state === 'ended') {
          streaming = false;
          streamState.textContent = 'ended';
          refreshSoon();
        } else if (typeof state === 'string') {
          streamState.textContent = state;
        } else {
          streaming = false;
          streamState.textContent = 'stopped';
          report(slot, state);
        }
        streamState.setAttribute('data-state', typeof state === 'string' ? state : 'error');
      },
    });
  };

  (async () => {
    try {
      run = await get(`/v1/runs/${encodeURIComponent(id)}`);
    } catch (e) {
      report(slot, e);
      return;
    }
    await loadDefs();
    if (!selected && run.steps.length) {
      const busy = run.steps.find((st) => ['WAITING_APPROVAL', 'WAITING', 'FAILED', 'RUNNING'].includes(st.status));
      selected = (busy || run.steps[0]).name;
    }
    startStream();
    render();
  })().catch(reportUnexpected);

  return () => {
    closed = true;
    stop();
    clearTimeout(pending);
  };
}
