// A form generated from a JSON Schema (a step's `approval.input_schema`): one field per
// property of an object schema; JSON text for anything the simple fields cannot hold. The
// form converts types only; the server validates against the schema and its answer (with
// a pointer per violation) is shown, and the fields it names are marked.

import { h } from './util.js';
import { ApiError } from './api.js';

function field(name, schema, required) {
  const id = `input-${name}`;
  const pointer = `/input/${name.replace(/~/g, '~0').replace(/\//g, '~1')}`;
  const label = `${schema.title || name}${required ? ' *' : ''}`;
  const hint = schema.description ? h('small', { class: 'hint' }, schema.description) : null;
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
  let input;
  let read;
  if (Array.isArray(schema.enum)) {
    input = h('select', { id, name, 'data-pointer': pointer },
      required ? null : h('option', { value: '' }, '—'),
      schema.enum.map((v, i) => h('option', { value: String(i), selected: schema.default === v }, String(v))));
    read = () => (input.value === '' ? undefined : schema.enum[Number(input.value)]);
  } else if (type === 'boolean') {
    input = h('input', { id, name, type: 'checkbox', checked: schema.default === true, 'data-pointer': pointer });
    return {
      el: h('div', { class: 'field check' }, h('label', { for: id }, input, ' ', label), hint),
      name, read: () => input.checked,
    };
  } else if (type === 'integer' || type === 'number') {
    input = h('input', {
      id, name, type: 'number', step: type === 'integer' ? 1 : 'any', value: schema.default,
      min: schema.minimum, max: schema.maximum, 'data-pointer': pointer, inputmode: 'decimal',
    });
    read = () => (input.value === '' ? undefined : Number(input.value));
  } else if (type === 'string') {
    input = h('input', { id, name, type: 'text', value: schema.default, 'data-pointer': pointer, autocomplete: 'off' });
    read = () => (input.value === '' && !required ? undefined : input.value);
  } else {
    input = h('textarea', {
      id, name, rows: 3, class: 'mono', 'data-pointer': pointer, spellcheck: 'false',
      placeholder: type === 'array' ? '[ … ]' : 'JSON',
    }, schema.default === undefined ? '' : JSON.stringify(schema.default, null, 2));
    read = () => {
      if (input.value.trim() === '') return undefined;
      try {
        return JSON.parse(input.value);
      } catch (e) {
        throw new ApiError(400, {
          title: 'Invalid JSON', detail: `${label} is not valid JSON`,
          errors: [{ pointer, message: e.message }],
        });
      }
    };
  }
  return { el: h('div', { class: 'field' }, h('label', { for: id }, label), input, hint), name, read };
}

/** The form for `schema`; `read()` gives the input object (or undefined when empty). */
export function schemaForm(schema) {
  const props = schema && typeof schema === 'object' && schema.properties && typeof schema.properties === 'object'
    ? schema.properties : null;
  if (!props) {
    const raw = field('input', {
      title: 'Input (JSON object)',
      description: schema ? 'Checked against the step\'s input schema.' : 'Optional; merged into the run context.',
    }, false);
    const pointerFix = raw.el.querySelector('[data-pointer]');
    pointerFix.setAttribute('data-pointer', '/input');
    return { el: h('div', { class: 'schema-form' }, raw.el), read: raw.read };
  }
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const fields = Object.entries(props).map(([name, sub]) => field(name, sub || {}, required.has(name)));
  return {
    el: h('fieldset', { class: 'schema-form' }, h('legend', {}, schema.title || 'Input'), fields.map((f) => f.el)),
    read() {
      const out = {};
      for (const f of fields) {
        const v = f.read();
        if (v !== undefined) out[f.name] = v;
      }
      return out;
    },
  };
}

/** Marks the fields of `form` that the error's pointers name (and unmarks the others). */
export function markInvalid(form, err) {
  const pointers = new Set((err && err.problem && err.problem.errors || []).map((e) => e.pointer));
  for (const el of form.querySelectorAll('[data-pointer]')) {
    const p = el.getAttribute('data-pointer');
    const bad = [...pointers].some((q) => q === p || q.startsWith(`${p}/`));
    if (bad) el.setAttribute('aria-invalid', 'true');
    else el.removeAttribute('aria-invalid');
  }
}
