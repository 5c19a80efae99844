// A run's steps as a DAG drawn in SVG, read left to right. Layout (Sugiyama-style):
// 1. layers by longest path from the sources (a step sits one layer right of its last parent);
// 2. edges that span several layers pass through virtual nodes, one per layer crossed;
// 3. each layer is ordered by the barycentre of its neighbours, sweeping right then left,
//    keeping the order with the fewest crossings;
// 4. layers are spaced evenly and centred vertically.
// Live updates only change classes and texts, so the drawing never moves.

import { s } from './util.js';

const W = 168;
const H = 46;
const GAP_X = 64;
const GAP_Y = 22;
const PAD = 12;

/** The parents of each step: `depends_on`, else the step before it (Go-compatible order). */
export function edgesOf(steps) {
  const names = new Set(steps.map((st) => st.name));
  const edges = [];
  steps.forEach((st, i) => {
    const parents = Array.isArray(st.depends_on) ? st.depends_on : (i > 0 ? [steps[i - 1].name] : []);
    for (const p of parents) if (names.has(p)) edges.push([p, st.name]);
  });
  return edges;
}

function crossings(pos, links, layerOf) {
  const byLayer = new Map();
  for (const link of links) {
    const l = layerOf.get(link[0]);
    if (!byLayer.has(l)) byLayer.set(l, []);
    byLayer.get(l).push(link);
  }
  let n = 0;
  for (const between of byLayer.values()) {
    for (let i = 0; i < between.length; i++) {
      for (let j = i + 1; j < between.length; j++) {
        const [a1, b1] = between[i];
        const [a2, b2] = between[j];
        if ((pos.get(a1) - pos.get(a2)) * (pos.get(b1) - pos.get(b2)) < 0) n++;
      }
    }
  }
  return n;
}

/** Positions for every step and a route for every edge. */
export function layout(steps) {
  const edges = edgesOf(steps);
  const parents = new Map(steps.map((st) => [st.name, []]));
  for (const [a, b] of edges) parents.get(b).push(a);
  const layer = new Map();
  const visit = (name, seen = new Set()) => {
    if (layer.has(name)) return layer.get(name);
    if (seen.has(name)) return 0; // a cycle cannot be stored; stay finite anyway
    seen.add(name);
    const l = parents.get(name).reduce((m, p) => Math.max(m, visit(p, seen) + 1), 0);
    layer.set(name, l);
    return l;
  };
  steps.forEach((st) => visit(st.name));

  // Virtual nodes split long edges into one-layer links.
  const depth = Math.max(0, ...layer.values()) + 1;
  const layers = Array.from({ length: depth }, () => []);
  steps.forEach((st) => layers[layer.get(st.name)].push(st.name));
  const links = [];
  const routes = [];
  for (const [a, b] of edges) {
    const chain = [a];
    for (let l = layer.get(a) + 1; l < layer.get(b); l++) {
      const v = `\u0000${a}\u0000${b}\u0000${l}`;
      layers[l].push(v);
      layer.set(v, l);
      chain.push(v);
    }
    chain.push(b);
    for (let i = 0; i + 1 < chain.length; i++) links.push([chain[i], chain[i + 1]]);
    routes.push({ from: a, to: b, chain });
  }

  const pos = new Map();
  const index = () => layers.forEach((ids) => ids.forEach((id, i) => pos.set(id, i)));
  index();
  const up = new Map();
  const down = new Map();
  for (const [a, b] of links) {
    if (!up.has(b)) up.set(b, []);
    if (!down.has(a)) down.set(a, []);
    up.get(b).push(a);
    down.get(a).push(b);
  }
  const order = (ids, neighbours) => {
    const centre = (id) => {
      const ns = neighbours.get(id) || [];
      return ns.length ? ns.reduce((t, n) => t + pos.get(n), 0) / ns.length : pos.get(id);
    };
    ids.sort((x, y) => centre(x) - centre(y) || pos.get(x) - pos.get(y));
  };
  let best = layers.map((ids) => [...ids]);
  let fewest = crossings(pos, links, layer);
  for (let round = 0; round < 6 && fewest > 0; round++) {
    for (let l = 1; l < depth; l++) { order(layers[l], up); index(); }
    for (let l = depth - 2; l >= 0; l--) { order(layers[l], down); index(); }
    const n = crossings(pos, links, layer);
    if (n < fewest) { fewest = n; best = layers.map((ids) => [...ids]); }
  }
  best.forEach((ids, l) => { layers[l] = ids; });
  index();

  const tallest = Math.max(...layers.map((ids) => ids.length));
  const height = PAD * 2 + tallest * H + (tallest - 1) * GAP_Y;
  const width = PAD * 2 + depth * W + (depth - 1) * GAP_X;
  const point = new Map();
  layers.forEach((ids, l) => {
    const span = ids.length * H + (ids.length - 1) * GAP_Y;
    const top = (height - span) / 2;
    ids.forEach((id, i) => point.set(id, { x: PAD + l * (W + GAP_X), y: top + i * (H + GAP_Y) }));
  });
  const nodes = steps.map((st) => ({ name: st.name, layer: layer.get(st.name), ...point.get(st.name) }));
  const paths = routes.map(({ from, to, chain }) => ({
    from, to, points: chain.map((id) => {
      const p = point.get(id);
      return { x: p.x, y: p.y + H / 2, virtual: id.startsWith('\u0000') };
    }),
  }));
  return { nodes, edges: paths, width, height, crossings: fewest };
}

function curve(points) {
  let d = '';
  for (let i = 0; i + 1 < points.length; i++) {
    const a = points[i];
    const b = points[i + 1];
    const x1 = a.virtual ? a.x + W / 2 : a.x + W;
    const x2 = b.virtual ? b.x + W / 2 : b.x;
    const mid = (x1 + x2) / 2;
    if (i === 0) d += `M${x1},${a.y}`;
    else d += ` L${x1},${a.y}`;
    d += ` C${mid},${a.y} ${mid},${b.y} ${x2},${b.y}`;
  }
  return d;
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * Draws the DAG; `onSelect(name)` on click, Enter or Space. Returns the SVG element and
 * `update(stepsByName, selected)` to recolor it.
 */
export function drawDag(steps, onSelect) {
  const plan = layout(steps);
  const svg = s('svg', {
    class: 'dag', viewBox: `0 0 ${plan.width} ${plan.height}`, width: plan.width, height: plan.height,
    role: 'group', 'aria-label': 'Steps of the run',
  });
  svg.append(s('defs', {}, s('marker', {
    id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
  }, s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))));
  for (const e of plan.edges) {
    svg.append(s('path', { class: 'edge', d: curve(e.points), 'marker-end': 'url(#arrow)', 'data-from': e.from, 'data-to': e.to }));
  }
  const parts = new Map();
  for (const n of plan.nodes) {
    const status = s('text', { x: n.x + 12, y: n.y + 36, class: 'node-status' }, '');
    const g = s('g', {
      class: 'node', tabindex: 0, role: 'button', 'data-step': n.name, 'data-layer': n.layer,
      'data-x': n.x, 'data-y': n.y,
      onclick: () => onSelect(n.name),
      onkeydown: (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); onSelect(n.name); } },
    },
    s('title', {}, n.name),
    s('rect', { x: n.x, y: n.y, width: W, height: H, rx: 7 }),
    s('text', { x: n.x + 12, y: n.y + 19, class: 'node-name' }, clip(n.name, 20)),
    status);
    parts.set(n.name, { g, status });
    svg.append(g);
  }
  const update = (byName, selected) => {
    for (const [name, { g, status }] of parts) {
      const st = byName.get(name);
      const value = st ? st.status : 'PENDING';
      g.setAttribute('class', `node st-${value.toLowerCase()}${name === selected ? ' selected' : ''}`);
      g.setAttribute('data-status', value);
      g.setAttribute('aria-pressed', name === selected ? 'true' : 'false');
      const label = st && st.attempts && st.attempts.length > 1 ? `${value} · ${st.attempts.length} attempts` : value;
      if (status.textContent !== label) status.textContent = label;
    }
  };
  return { el: svg, update };
}
