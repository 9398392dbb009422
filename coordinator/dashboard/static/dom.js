// Small DOM helpers: text is always set as text (never as HTML), so nothing the API returns (a
// study name, a node's message) can inject markup.

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

/** A new element with attributes and children (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? '' : String(c)));
  return node;
}

/** Shows `text` in the element (hidden when empty). */
export function say(id, text) {
  const node = $(id);
  node.textContent = text ?? '';
  node.hidden = !text;
}

/** A number as the dashboard shows it: `digits` decimals, or an em dash for null. */
export const fixed = (x, digits = 4) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '\u2014');

/** A cell with the exact value in data-value and the rounded one as text (tests read both). */
export const numberCell = (x, digits, field) => el('td', { class: 'num', dataset: { field, value: x === null || x === undefined ? '' : String(x) } }, fixed(x, digits));

/** An ISO time as local date and time, to the second. */
export const when = (iso) => (iso ? new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' }) : '\u2014');

/** Seconds between two ISO times, or null while the second is missing. */
export const seconds = (from, to) => (from && to ? (Date.parse(to) - Date.parse(from)) / 1000 : null);

/** Replaces a table body's rows. */
export function fillRows(tableId, rows) {
  $(tableId).tBodies[0].replaceChildren(...rows);
}
