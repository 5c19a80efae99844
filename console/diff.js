// A line diff of two texts (longest common subsequence) and its side-by-side rendering.

import { h } from './util.js';

/** Edit script: `[{op: 'same' | 'del' | 'add', a?, b?}]` with 0-based line numbers. */
export function diffLines(left, right) {
  const a = left.split('\n');
  const b = right.split('\n');
  // Trim the common head and tail: definitions differ in a few lines.
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head
    && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail++;
  const n = a.length - head - tail;
  const m = b.length - head - tail;
  // Beyond ~4 M cells the table costs too much memory: the middle is shown as replaced.
  const small = n * m <= 4e6;
  const lcs = Array.from({ length: small ? n + 1 : 0 }, () => new Uint32Array(m + 1));
  for (let i = small ? n - 1 : -1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = a[head + i] === b[head + j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const ops = [];
  for (let k = 0; k < head; k++) ops.push({ op: 'same', a: k, b: k });
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (!small) {
      if (i < n) { ops.push({ op: 'del', a: head + i }); i++; } else { ops.push({ op: 'add', b: head + j }); j++; }
    } else if (i < n && j < m && a[head + i] === b[head + j]) {
      ops.push({ op: 'same', a: head + i, b: head + j }); i++; j++;
    } else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) {
      ops.push({ op: 'add', b: head + j }); j++;
    } else {
      ops.push({ op: 'del', a: head + i }); i++;
    }
  }
  for (let k = 0; k < tail; k++) ops.push({ op: 'same', a: a.length - tail + k, b: b.length - tail + k });
  return { ops, a, b };
}

/** Rows pairing deletions with additions, so that changed lines face each other. */
function rows(ops) {
  const out = [];
  let dels = [];
  let adds = [];
  const flush = () => {
    for (let k = 0; k < Math.max(dels.length, adds.length); k++) out.push({ a: dels[k], b: adds[k], changed: true });
    dels = [];
    adds = [];
  };
  for (const o of ops) {
    if (o.op === 'del') dels.push(o.a);
    else if (o.op === 'add') adds.push(o.b);
    else { flush(); out.push({ a: o.a, b: o.b, changed: false }); }
  }
  flush();
  return out;
}

function cell(lines, n, kind) {
  if (n === undefined) return [h('td', { class: 'ln' }), h('td', { class: 'gap' })];
  return [h('td', { class: 'ln' }, n + 1), h('td', { class: kind }, lines[n])];
}

/** A side-by-side table of two texts; unchanged stretches longer than 6 lines fold. */
export function sideBySide(left, right, leftLabel, rightLabel) {
  const { ops, a, b } = diffLines(left, right);
  const all = rows(ops);
  const changes = all.filter((r) => r.changed).length;
  const body = h('tbody');
  let i = 0;
  while (i < all.length) {
    if (!all[i].changed) {
      let j = i;
      while (j < all.length && !all[j].changed) j++;
      const run = all.slice(i, j);
      const keepHead = i === 0 ? 0 : 3;
      const keepTail = j === all.length ? 0 : 3;
      if (run.length > keepHead + keepTail + 1) {
        run.slice(0, keepHead).forEach((r) => body.append(h('tr', {}, cell(a, r.a, 'same'), cell(b, r.b, 'same'))));
        body.append(h('tr', { class: 'fold' }, h('td', { colspan: 4 }, `${run.length - keepHead - keepTail} unchanged lines`)));
        run.slice(run.length - keepTail).forEach((r) => body.append(h('tr', {}, cell(a, r.a, 'same'), cell(b, r.b, 'same'))));
      } else {
        run.forEach((r) => body.append(h('tr', {}, cell(a, r.a, 'same'), cell(b, r.b, 'same'))));
      }
      i = j;
    } else {
      const r = all[i];
      body.append(h('tr', {}, cell(a, r.a, 'del'), cell(b, r.b, 'add')));
      i++;
    }
  }
  return h('div', { class: 'diff-wrap' },
    h('p', { class: 'muted' }, changes ? `${changes} changed line${changes === 1 ? '' : 's'}` : 'The two versions have the same definition.'),
    h('table', { class: 'diff' },
      h('colgroup', {}, h('col', { class: 'ln' }), h('col'), h('col', { class: 'ln' }), h('col')),
      h('thead', {}, h('tr', {}, h('th', { colspan: 2 }, leftLabel), h('th', { colspan: 2 }, rightLabel))),
      body));
}
