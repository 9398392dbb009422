// The dashboard's entry: sign-in, the studies list and one study, chosen by the URL's hash
// (#/ or #/studies/<id>). Views follow a running study by long-polling its status.

import { ApiError, forgetToken, get, savedToken, saveToken } from './api.js';
import { $, el, fillRows, say, when } from './dom.js';
import { studyFromHash } from './study-id.js';
import { clearStudy, forgetRounds, loadStudy, renderStudy } from './study-view.js';

const LIST_REFRESH_MS = 5000;
const RETRY_MS = 3000;
// Each navigation starts a new view; a view's loops stop when they see a newer one.
let view = { id: 0, abort: new AbortController() };

function show(section) {
  for (const id of ['login', 'studies-view', 'study-view']) $(id).hidden = id !== section;
  $('session').hidden = section === 'login';
}

function newView() {
  view.abort.abort();
  view = { id: view.id + 1, abort: new AbortController() };
  return view;
}
const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

/** A refused token goes back to the sign-in form with the API's message. */
function signedOut(message) {
  forgetToken();
  forgetRounds();
  clearStudy();
  fillRows('studies', []);
  $('studies-empty').hidden = true;
  newView();
  show('login');
  say('login-error', message);
}

async function showStudies() {
  const v = newView();
  show('studies-view');
  while (!v.abort.signal.aborted) {
    try {
      const { studies } = await get('/v1/dashboard/studies', { signal: v.abort.signal });
      say('studies-error', '');
      fillRows('studies', studies.map((s) => el('tr', { dataset: { study: s.id, state: s.state } },
        el('td', {}, el('a', { href: `#/studies/${encodeURIComponent(s.id)}` }, s.name)),
        el('td', {}, el('span', { class: `pill ${s.state}` }, s.state)),
        el('td', { class: 'num', dataset: { field: 'rounds' } }, `${s.currentRound} / ${s.rounds ?? '?'}`),
        el('td', {}, `${s.kind} \u00b7 ${s.model ?? '?'}`),
        el('td', {}, when(s.createdAt)),
      )));
      $('studies-empty').hidden = studies.length > 0;
    } catch (err) {
      if (v.abort.signal.aborted) return;
      if (err instanceof ApiError && err.status === 401) return signedOut(`Signed out: ${err.message}`);
      say('studies-error', err instanceof ApiError ? `The API refused the list: ${err.message}` : `Cannot reach the coordinator: ${err.message}`);
    }
    await sleep(LIST_REFRESH_MS, v.abort.signal);
  }
}

/** Shows a study and, while it runs, follows it: each status change (long-poll) reloads the page's data. */
async function showStudy(studyId) {
  const v = newView();
  clearStudy();
  show('study-view');
  let seen;
  while (!v.abort.signal.aborted) {
    try {
      const data = await loadStudy(studyId, { signal: v.abort.signal, seen });
      if (v.abort.signal.aborted) return;
      say('study-error', '');
      renderStudy(data);
      const running = data.status.state === 'running';
      say('refresh-note', running ? 'Following the study live: the page updates as rounds progress.' : `Study ${data.status.state}; not refreshing.`);
      if (!running) return;
      seen = data.status.changeCount;
    } catch (err) {
      if (v.abort.signal.aborted) return;
      if (err instanceof ApiError && err.status === 401) return signedOut(`Signed out: ${err.message}`);
      say('study-error', err instanceof ApiError ? `The API refused this study (${err.code}): ${err.message}` : `Cannot reach the coordinator: ${err.message}`);
      if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return;
      seen = undefined;
      await sleep(RETRY_MS, v.abort.signal);
    }
  }
}

/** A hash naming no valid study: says so on the study view and calls no API with it. */
function invalidStudy(message) {
  newView();
  clearStudy();
  show('study-view');
  say('study-error', message);
}

function route() {
  if (!savedToken()) return signedOut('');
  const study = studyFromHash(location.hash);
  if (study?.error) return invalidStudy(study.error);
  if (study) void showStudy(study.id);
  else void showStudies();
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = $('token').value.trim();
  try {
    // The token is kept only once the API accepts it for the studies list.
    await get('/v1/dashboard/studies', { token });
    saveToken(token);
    forgetRounds();
    $('token').value = '';
    say('login-error', '');
    route();
  } catch (err) {
    say('login-error', err instanceof ApiError ? `Token refused (${err.code}): ${err.message}` : `Cannot reach the coordinator: ${err.message}`);
  }
});
$('sign-out').addEventListener('click', () => {
  signedOut('');
  location.hash = '#/';
});
window.addEventListener('hashchange', route);
route();
