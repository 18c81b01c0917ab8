// The clinic dashboard: sign-in, the day of a clinic (live over the slots
// stream), booking and cancelling, time travel, and the admin panels. Plain
// DOM, no framework: every request goes to this page's own origin.

import { Api, Problem, newKey } from './api.js';

const SESSION_KEY = 'booking-ledger.dashboard';
/** Admin panels are read again this often, in milliseconds. */
const PANEL_REFRESH_MS = 3000;
/** Wait before reopening a live stream that ended or was refused. */
const RECONNECT_MS = 1000;
/** Pages of refusals (1000 each) read per refresh, at most. */
const REFUSAL_PAGES_MAX = 20;
/** Refusals kept for the panel, at most (the newest). */
const REFUSALS_KEPT_MAX = 5000;
/** Pages of a day's history (1000 changes each) read, at most. */
const HISTORY_PAGES_MAX = 20;

const $ = (id) => document.getElementById(id);

/** Everything the page knows; rendering reads it, handlers change it. */
const state = {
  session: null, // { token, tenant, clinic, date }
  api: null,
  day: null, // the live day, as GET /slots answers it, kept up to date by the stream
  history: [], // the day's changes: [{ position, summary, type, doctor }]
  travel: null, // null: live; else { position, day } shown as it stood
  travelSeq: 0,
  stream: null, // the AbortController of the live stream
  timers: [],
  admin: false,
  refusals: { next: 1, items: [] },
  zone: null, // the clinic's IANA zone, once known
};

// ---- small helpers ----

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function today() {
  const now = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Shows a problem as its title and detail (and what its code adds). */
function showProblem(target, error) {
  const box = typeof target === 'string' ? $(target) : target;
  box.replaceChildren();
  if (!error) return;
  if (!(error instanceof Problem)) {
    console.warn(error);
    error = new Problem(0, { title: 'Unexpected error', detail: String(error?.message || error) });
  }
  const extra = [];
  if (error.code) extra.push(el('span', { class: 'code' }, error.code));
  if (error.code === 'slot_taken') {
    extra.push(el('span', { class: 'holder' }, `Held by token ${error.body.token} (booking ${error.body.booking_id})`));
  }
  if (error.body.retry_after || error.status === 503) extra.push(el('span', {}, 'Try again shortly.'));
  box.append(el('p', {}, el('strong', { class: 'title' }, error.title), ' ', el('span', { class: 'detail' }, error.detail)), ...extra.map((e) => el('p', {}, e)));
}

function slotLabel(slot) {
  return slot.time ? `${slot.time}` : `slot ${slot.slot}`;
}

function clinicPath(suffix) {
  return `/clinics/${encodeURIComponent(state.session.clinic)}${suffix}`;
}

// ---- session ----

function saveSession() {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
}

function loadSession() {
  // The fragment signs in directly; it never reaches the server, and is
  // taken off the address bar so the token stays out of the history.
  if (location.hash.includes('token=')) {
    const params = new URLSearchParams(location.hash.slice(1));
    history.replaceState(null, '', location.pathname + location.search);
    const session = {
      token: params.get('token') || '',
      tenant: params.get('tenant') || '',
      clinic: params.get('clinic') || '',
      date: params.get('date') || today(),
    };
    if (session.token && session.tenant && session.clinic) return session;
    $('tenant').value = session.tenant;
    $('clinic').value = session.clinic;
  }
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
  } catch {
    return null;
  }
}

async function signIn(session) {
  const api = new Api(session);
  const button = $('sign-in-button');
  button.disabled = true;
  showProblem('sign-in-problem', null);
  try {
    // Proves the token before anything is shown: 401, 403 and a bad date say so here.
    const day = await api.get(`/clinics/${encodeURIComponent(session.clinic)}/slots?date=${encodeURIComponent(session.date)}`);
    state.session = session;
    state.api = api;
    saveSession();
    start(day);
  } catch (error) {
    showProblem('sign-in-problem', error);
    $('sign-in').hidden = false;
    $('tenant').value = session.tenant;
    $('clinic').value = session.clinic;
    $('date').value = session.date;
  } finally {
    button.disabled = false;
  }
}

function signOut(reason) {
  stop();
  sessionStorage.removeItem(SESSION_KEY);
  state.session = null;
  state.api = null;
  $('dashboard').hidden = true;
  $('sign-out').hidden = true;
  $('who').textContent = '';
  $('sign-in').hidden = false;
  $('token').value = '';
  showProblem('sign-in-problem', reason || null);
  $('token').focus();
}

function stop() {
  state.stream?.abort();
  state.stream = null;
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
}

function start(day) {
  stop();
  const { tenant, clinic, date } = state.session;
  $('sign-in').hidden = true;
  $('dashboard').hidden = false;
  $('sign-out').hidden = false;
  $('who').textContent = `${tenant} · ${clinic}`;
  state.zone = null;
  state.zoneAsked = false;
  $('day-date').value = date;
  state.day = day;
  state.travel = null;
  state.history = [];
  state.refusals = { next: 1, items: [] };
  render();
  follow();
  loadHistory();
  startPanels();
}

function changeDate(date) {
  if (!date || date === state.session.date) return;
  state.session.date = date;
  saveSession();
  showProblem('problem', null);
  state.day = null;
  start(null);
}

// ---- the live day ----

function setStatus(text, live) {
  const status = $('live-status');
  status.textContent = text;
  status.classList.toggle('live', Boolean(live));
}

async function follow() {
  const controller = new AbortController();
  state.stream = controller;
  const { signal } = controller;
  let lastId = null;
  while (!signal.aborted) {
    try {
      await state.api.stream(clinicPath(`/slots/stream?date=${encodeURIComponent(state.session.date)}`), {
        lastEventId: lastId,
        signal,
        onOpen: () => setStatus('Live', true),
        onMessage: (message) => {
          if (message.id != null) lastId = message.id;
          onStreamMessage(message);
        },
      });
    } catch (error) {
      if (signal.aborted || error.name === 'AbortError') return;
      if (error.status === 401) return signOut(error);
      if (error.status === 400 && lastId != null) lastId = null; // start again from the whole day
      else if (error.status === 403) {
        setStatus('Not live');
        return showProblem('problem', error);
      } else if (error.status) showProblem('problem', error);
    }
    if (signal.aborted) return;
    setStatus('Reconnecting…');
    await sleep(RECONNECT_MS, signal);
  }
}

function onStreamMessage(message) {
  const data = JSON.parse(message.data);
  if (message.event === 'day') {
    state.day = data;
    showProblem('problem', null);
  } else if (message.event === 'change') {
    applyChange(data);
    $('notice').textContent = `Position ${data.as_of}: ${data.summary}`;
    const last = state.history[state.history.length - 1];
    if (!last || data.as_of > last.position) {
      state.history.push({ position: data.as_of, summary: data.summary, type: data.type });
    }
  } else if (message.event === 'error') {
    showProblem('problem', new Problem(500, { title: 'The live stream stopped', detail: data.detail, code: data.code }));
  }
  render();
}

/** A change sets each listed doctor's row to `slots_per_day` slots and replaces the slots it lists. */
function applyChange(change) {
  if (!state.day) return;
  state.day.as_of = change.as_of;
  for (const update of change.doctors) {
    let doctor = state.day.doctors.find((d) => d.doctor === update.doctor);
    if (!doctor) {
      doctor = { doctor: update.doctor, slots: [] };
      state.day.doctors.push(doctor);
      state.day.doctors.sort((a, b) => (a.doctor < b.doctor ? -1 : a.doctor > b.doctor ? 1 : 0));
    }
    doctor.slots.length = Math.min(doctor.slots.length, update.slots_per_day);
    for (const slot of update.slots) doctor.slots[slot.slot] = slot;
    for (let i = 0; i < update.slots_per_day; i++) doctor.slots[i] ??= { slot: i, state: 'free' };
  }
}

// ---- rendering the day ----

/** The clinic's zone, asked once the clinic is known to exist (it has a schedule). */
function loadZone() {
  if (state.zoneAsked || !state.day?.doctors?.length) return;
  state.zoneAsked = true;
  const { tenant, clinic } = state.session;
  state.api.get(clinicPath('')).then(
    (view) => {
      state.zone = view.time_zone;
      $('who').textContent = `${tenant} · ${clinic} · ${view.time_zone}`;
      render();
    },
    () => {},
  );
}

function render() {
  loadZone();
  renderDoctorFilter();
  renderGrid();
  renderTravel();
}

function renderDoctorFilter() {
  const select = $('doctor-filter');
  const chosen = select.value;
  const doctors = (state.day?.doctors || []).map((d) => d.doctor);
  const current = [...select.options].slice(1).map((o) => o.value);
  if (doctors.join('\u0000') !== current.join('\u0000')) {
    select.replaceChildren(el('option', { value: '' }, 'All doctors'), ...doctors.map((d) => el('option', { value: d }, d)));
    select.value = doctors.includes(chosen) ? chosen : '';
  }
}

function renderGrid() {
  const day = state.travel ? state.travel.day : state.day;
  const table = $('grid');
  const focused = document.activeElement?.closest?.('td[data-doctor]');
  const refocus = focused && { doctor: focused.dataset.doctor, slot: focused.dataset.slot, cls: document.activeElement.className };
  const filter = $('doctor-filter').value;
  const doctors = (day?.doctors || []).filter((d) => !filter || d.doctor === filter);
  const when = state.travel ? `as it stood at position ${state.travel.position}` : 'live';
  $('grid-caption').textContent = day ? `Slots of ${state.session.clinic} on ${day.date}, ${when}` : 'Slots';
  table.classList.toggle('past', Boolean(state.travel));
  $('empty').hidden = !day || doctors.length > 0;
  const rows = Math.max(0, ...doctors.map((d) => d.slots.length));
  const head = el('tr', {}, el('th', { scope: 'col' }, 'Time'), ...doctors.map((d) => el('th', { scope: 'col' }, d.doctor)));
  const body = [];
  for (let i = 0; i < rows; i++) {
    const time = doctors.map((d) => d.slots[i]).find((s) => s?.time)?.time;
    const cells = doctors.map((d) => slotCell(d, d.slots[i]));
    body.push(el('tr', {}, el('th', { scope: 'row' }, time ? `${time}` : `Slot ${i}`, time ? el('span', { class: 'muted' }, ` #${i}`) : null), ...cells));
  }
  table.tHead.replaceChildren(head);
  table.tBodies[0].replaceChildren(...body);
  if (refocus) {
    const cell = table.querySelector(`td[data-doctor="${CSS.escape(refocus.doctor)}"][data-slot="${refocus.slot}"]`);
    (cell?.querySelector('button') || cell)?.focus?.();
  }
}

function slotCell(doctor, slot) {
  if (!slot) return el('td', { class: 'none' }, '—');
  const attributes = { dataset: { doctor: doctor.doctor, slot: String(slot.slot), state: slot.state }, class: slot.state };
  const label = `${doctor.doctor} ${slotLabel(slot)}`;
  if (slot.state === 'free') {
    return el(
      'td',
      attributes,
      el('span', { class: 'state' }, 'Free'),
      state.travel ? null : el('button', { type: 'button', class: 'book', 'aria-label': `Book ${label}`, onclick: () => openBooking(doctor.doctor, slot) }, 'Book'),
    );
  }
  // A hold keeps the slot for a patient deciding (a countdown to its expiry);
  // a time the clock skips cannot be booked.
  if (slot.state === 'held') {
    return el('td', attributes, el('span', { class: 'state' }, 'Held '), el('span', { class: 'countdown', dataset: { expires: slot.expires_at || '' } }, countdown(slot.expires_at)));
  }
  if (slot.state === 'unavailable') {
    return el('td', attributes, el('span', { class: 'state' }, 'Unavailable'));
  }
  return el(
    'td',
    attributes,
    el('span', { class: 'token' }, slot.token || ''),
    ' ',
    el('span', { class: 'patient' }, slot.patient || ''),
    state.travel
      ? null
      : el(
          'span',
          { class: 'actions' },
          el(
            'button',
            { type: 'button', class: 'cancel secondary', 'aria-label': `Cancel ${slot.token} (${slot.patient}) at ${label}`, onclick: () => openCancel(doctor.doctor, slot) },
            'Cancel',
          ),
          el('button', { type: 'button', class: 'move secondary', 'aria-label': `Move ${slot.token} (${slot.patient}) from ${label}`, onclick: () => openMove(doctor.doctor, slot) }, 'Move'),
          isToday()
            ? [
                el('button', { type: 'button', class: 'check-in', 'aria-label': `Check in ${slot.token} (${slot.patient})`, onclick: () => mark(slot, 'check-in') }, 'Check in'),
                el('button', { type: 'button', class: 'no-show secondary', 'aria-label': `No-show ${slot.token} (${slot.patient})`, onclick: () => mark(slot, 'no-show') }, 'No-show'),
              ]
            : null,
        ),
  );
}

/** "4:32 left" until an RFC 3339 instant, or "expired". */
function countdown(expiresAt) {
  const left = Math.max(0, Math.round((Date.parse(expiresAt) - Date.now()) / 1000));
  if (!expiresAt || Number.isNaN(left)) return '';
  if (left === 0) return 'expired';
  return `${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')} left`;
}

function tickCountdowns() {
  for (const node of document.querySelectorAll('#grid .countdown')) node.textContent = countdown(node.dataset.expires);
}

/** Whether the day shown is today at the clinic (its zone, once known). */
function isToday() {
  const date = new Date().toLocaleDateString('en-CA', state.zone ? { timeZone: state.zone } : {});
  return state.session?.date === date;
}

async function mark(slot, what) {
  try {
    const booking = await state.api.post(`/bookings/${encodeURIComponent(slot.booking_id)}/${what}`, {}, newKey());
    $('notice').textContent = `${booking.token} for ${booking.patient}: ${booking.attendance === 'arrived' ? 'checked in' : 'no-show'}.`;
  } catch (error) {
    showProblem('problem', error);
    if (error.status === 401) signOut(error);
  }
}

// ---- moving a booking ----

let moving = null; // the booked slot the move dialog is for

function openMove(doctor, slot) {
  moving = { doctor, ...slot };
  $('move-slot').textContent = `${slot.token} for ${slot.patient}: ${doctor}, ${slotLabel(slot)} on ${state.session.date}`;
  const options = [];
  for (const d of state.day?.doctors || []) {
    for (const free of d.slots.filter((s) => s.state === 'free')) {
      options.push(el('option', { value: JSON.stringify({ doctor: d.doctor, slot: free.slot }) }, `${d.doctor}, ${slotLabel(free)}`));
    }
  }
  $('move-to').replaceChildren(...options);
  showProblem('move-problem', null);
  $('move-submit').disabled = options.length === 0;
  $('move-dialog').showModal();
  $('move-to').focus();
}

async function submitMove(event) {
  event.preventDefault();
  const button = $('move-submit');
  if (button.disabled || !moving) return;
  button.disabled = true;
  showProblem('move-problem', null);
  const to = JSON.parse($('move-to').value);
  try {
    // The version seen now: a move decided on a booking changed meanwhile is refused (version_conflict).
    const current = await state.api.get(`/bookings/${encodeURIComponent(moving.booking_id)}`);
    const body = { doctor: to.doctor, slot: to.slot, expected_version: current.version };
    const moved = await state.api.post(`/bookings/${encodeURIComponent(moving.booking_id)}/reschedule`, body, newKey());
    $('move-dialog').close();
    $('notice').textContent = `Moved ${moved.patient} to ${moved.doctor}, slot ${moved.slot}: token ${moved.token}.`;
  } catch (error) {
    showProblem('move-problem', error);
    if (error.status === 401) signOut(error);
  } finally {
    button.disabled = false;
  }
}

// ---- the waitlist ----

async function refreshWaitlist() {
  try {
    const list = await state.api.get(clinicPath(`/waitlist?date=${encodeURIComponent(state.session.date)}`));
    const items = list.entries.map((entry) =>
      el(
        'li',
        { dataset: { status: entry.status } },
        `${entry.patient}${entry.doctor ? ` (${entry.doctor})` : ''}: ${entry.status}`,
        entry.status === 'offered' && entry.expires_at ? el('span', { class: 'muted' }, ` until ${new Date(entry.expires_at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`) : null,
      ),
    );
    $('waitlist').replaceChildren(...items);
    $('waitlist-empty').hidden = items.length > 0;
    showProblem('waitlist-problem', null);
  } catch (error) {
    showProblem('waitlist-problem', error);
  }
}

// ---- booking and cancelling ----

let booking = null; // { doctor, slot } the book dialog is for

function openBooking(doctor, slot) {
  booking = { doctor, slot: slot.slot };
  $('book-slot').textContent = `${doctor}, ${slotLabel(slot)} on ${state.session.date}`;
  $('patient').value = '';
  $('kind').value = 'advance';
  showProblem('book-problem', null);
  $('book-submit').disabled = false;
  $('book-dialog').showModal();
  $('patient').focus();
}

async function submitBooking(event) {
  event.preventDefault();
  const button = $('book-submit');
  if (button.disabled || !booking) return;
  // Disabled before the request leaves: a second click finds it disabled.
  button.disabled = true;
  showProblem('book-problem', null);
  const body = {
    clinic: state.session.clinic,
    doctor: booking.doctor,
    date: state.session.date,
    slot: booking.slot,
    patient: $('patient').value.trim(),
    kind: $('kind').value,
  };
  try {
    const booked = await state.api.post('/bookings', body, newKey());
    $('book-dialog').close();
    $('notice').textContent = `Booked ${booked.token} for ${booked.patient} (${booked.doctor}, slot ${booked.slot}).`;
  } catch (error) {
    showProblem('book-problem', error);
    if (error.status === 401) signOut(error);
    refreshRefusals();
  } finally {
    button.disabled = false;
  }
}

let cancelling = null; // the slot the cancel dialog is for

function openCancel(doctor, slot) {
  cancelling = { doctor, ...slot };
  $('cancel-slot').textContent = `${slot.token} for ${slot.patient}: ${doctor}, ${slotLabel(slot)} on ${state.session.date}`;
  $('cancel-reason').value = '';
  showProblem('cancel-problem', null);
  $('cancel-submit').disabled = false;
  $('cancel-dialog').showModal();
  $('cancel-reason').focus();
}

async function submitCancel(event) {
  event.preventDefault();
  const button = $('cancel-submit');
  if (button.disabled || !cancelling) return;
  button.disabled = true;
  showProblem('cancel-problem', null);
  const reason = $('cancel-reason').value.trim();
  try {
    const cancelled = await state.api.post(`/bookings/${encodeURIComponent(cancelling.booking_id)}/cancel`, reason ? { reason } : {}, newKey());
    $('cancel-dialog').close();
    $('notice').textContent = `Cancelled ${cancelled.token} for ${cancelled.patient}; the slot is free.`;
  } catch (error) {
    showProblem('cancel-problem', error);
    if (error.status === 401) signOut(error);
  } finally {
    button.disabled = false;
  }
}

// ---- time travel ----

async function loadHistory() {
  const date = state.session.date;
  const changes = [];
  let from = 1;
  try {
    for (let page = 0; page < HISTORY_PAGES_MAX; page++) {
      const answer = await state.api.get(clinicPath(`/slots/history?date=${encodeURIComponent(date)}&from=${from}`));
      changes.push(...answer.changes);
      if (answer.next == null) break;
      from = answer.next;
    }
  } catch (error) {
    return showProblem('problem', error);
  }
  if (!state.session || state.session.date !== date) return;
  // Changes the stream delivered meanwhile stay; the history fills in before them.
  const known = new Set(changes.map((c) => c.position));
  state.history = [...changes, ...state.history.filter((c) => !known.has(c.position) && c.position > (changes.at(-1)?.position ?? 0))];
  renderTravel();
}

function renderTravel() {
  const slider = $('travel');
  const count = state.history.length;
  slider.max = String(count);
  if (!state.travel) slider.value = String(count);
  const index = Number(slider.value);
  const change = state.history[index - 1];
  let line;
  if (!state.travel) line = count ? `Now (live), after position ${state.history[count - 1].position}: ${state.history[count - 1].summary}` : 'Now (live)';
  else line = `Position ${state.travel.position}: ${change ? change.summary : ''}`;
  $('travel-line').textContent = line;
  slider.setAttribute('aria-valuetext', state.travel ? `Position ${state.travel.position}` : 'Now');
  $('travel-now').disabled = !state.travel;
}

async function travelTo(index) {
  const count = state.history.length;
  if (index >= count) {
    state.travel = null;
    render();
    return;
  }
  const change = state.history[index - 1];
  // Index 0 is the day before its first change.
  const position = change ? change.position : Math.max(0, (state.history[0]?.position ?? 1) - 1);
  const seq = ++state.travelSeq;
  try {
    const day = await state.api.get(clinicPath(`/slots?date=${encodeURIComponent(state.session.date)}&as_of=${position}`));
    if (seq !== state.travelSeq) return; // a later move of the slider won
    state.travel = { position, day };
    showProblem('problem', null);
  } catch (error) {
    if (seq === state.travelSeq) showProblem('problem', error);
    return;
  }
  renderGrid();
  renderTravel();
}

// ---- admin panels ----

function startPanels() {
  $('admin').hidden = true;
  $('admin-note').hidden = true;
  refreshPanels(true);
  refreshWaitlist();
  state.timers.push(setInterval(() => refreshPanels(false), PANEL_REFRESH_MS));
  state.timers.push(setInterval(refreshWaitlist, PANEL_REFRESH_MS));
  state.timers.push(setInterval(tickCountdowns, 1000));
}

async function refreshPanels(first) {
  if (!state.session) return;
  if (first) {
    try {
      await state.api.get('/rejections?limit=1');
      state.admin = true;
    } catch (error) {
      state.admin = false;
      if (error.status !== 403) showProblem('refusals-problem', error);
    }
    $('admin').hidden = !state.admin;
    $('admin-note').hidden = state.admin;
  }
  if (!state.admin) return;
  await Promise.all([refreshRefusals(), refreshCampaigns(), refreshCalls(), refreshAudit()]);
}

/** Whether a refused command concerned this clinic's day. */
function ofThisDay(refusal) {
  const body = refusal.command?.body;
  const { clinic, date } = state.session;
  if (body && typeof body === 'object' && body.clinic === clinic && body.date === date) return true;
  return false;
}

async function refreshRefusals() {
  if (!state.admin || !state.session) return;
  const kept = state.refusals;
  try {
    for (let page = 0; page < REFUSAL_PAGES_MAX; page++) {
      const answer = await state.api.get(`/rejections?from=${kept.next}&limit=1000`);
      kept.items.push(...answer.rejections.filter(ofThisDay));
      if (kept.items.length > REFUSALS_KEPT_MAX) kept.items.splice(0, kept.items.length - REFUSALS_KEPT_MAX);
      const moved = answer.next > kept.next;
      kept.next = Math.max(kept.next, answer.next);
      if (!moved || answer.rejections.length < 1000) break;
    }
    showProblem('refusals-problem', null);
  } catch (error) {
    showProblem('refusals-problem', error);
  }
  if (kept !== state.refusals) return;
  const counts = new Map();
  for (const r of kept.items) counts.set(r.code, (counts.get(r.code) || 0) + 1);
  const rows = [...counts].sort((a, b) => b[1] - a[1]).map(([code, n]) => el('tr', { dataset: { code } }, el('td', {}, el('code', {}, code)), el('td', { class: 'count' }, n)));
  $('refusal-counts').tBodies[0].replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: '2', class: 'muted' }, 'None this day'))]));
  const latest = kept.items.slice(-10).reverse().map((r) => {
    const body = r.command?.body || {};
    const what = body.doctor !== undefined ? `${body.doctor} slot ${body.slot} for ${body.patient}` : `${r.command?.method} ${r.command?.path}`;
    return el(
      'li',
      { dataset: { code: r.code } },
      el('code', {}, r.code),
      ` ${what} by ${r.actor} at ${new Date(r.recorded_at).toLocaleTimeString()}`,
      r.conflicts_with ? el('span', { class: 'conflict' }, ` — conflicts with ${r.conflicts_with}`) : null,
    );
  });
  $('refusals-latest').replaceChildren(...latest);
}

async function refreshCampaigns() {
  try {
    const answer = await state.api.get('/campaigns');
    showProblem('campaigns-problem', null);
    const items = answer.campaigns.map(campaignItem);
    const list = $('campaigns');
    // A reason being typed is not wiped by a refresh.
    if (list.contains(document.activeElement) && document.activeElement.tagName === 'INPUT') return;
    list.replaceChildren(...(items.length ? items : [el('li', { class: 'muted' }, 'No campaigns yet')]));
  } catch (error) {
    showProblem('campaigns-problem', error);
  }
}

function campaignItem(campaign) {
  const halted = campaign.state === 'halted';
  const item = el(
    'li',
    { class: halted ? 'halted' : 'running', dataset: { campaign: campaign.campaign } },
    el('strong', {}, campaign.campaign),
    ' ',
    el('span', { class: 'badge' }, halted ? 'Halted' : 'Running'),
    halted ? el('p', { class: 'reason' }, campaign.halt_reason) : null,
    el('p', { class: 'muted' }, `${campaign.consecutive_failures} consecutive failures, ${campaign.duplicate_attempts} refused duplicates in the window`),
  );
  if (halted) {
    const id = `resume-${campaign.campaign.replace(/[^A-Za-z0-9_-]/g, '_')}`;
    const problem = el('div', { class: 'problem', role: 'alert' });
    const input = el('input', { id, required: true, maxlength: '1000', autocomplete: 'off' });
    const button = el('button', { type: 'submit' }, 'Resume');
    const form = el('form', { class: 'inline', onsubmit: (event) => resume(event, campaign.campaign, input, button, problem) }, el('label', { for: id }, `Reason to resume ${campaign.campaign}`), input, button);
    item.append(form, problem);
  }
  return item;
}

async function resume(event, campaign, input, button, problem) {
  event.preventDefault();
  if (button.disabled) return;
  button.disabled = true;
  try {
    await state.api.post(`/campaigns/${encodeURIComponent(campaign)}/resume`, { reason: input.value.trim() }, newKey());
    input.blur();
    $('notice').textContent = `Campaign ${campaign} resumed.`;
    await refreshCampaigns();
  } catch (error) {
    showProblem(problem, error);
    button.disabled = false;
  }
}

async function refreshCalls() {
  try {
    const answer = await state.api.get('/calls?state=calling&older_than_secs=0');
    showProblem('calls-problem', null);
    const items = answer.calls.map((call) => el('li', {}, `${call.to} — campaign ${call.campaign}, calling since ${new Date(call.started_at).toLocaleString()}`, el('span', { class: 'muted' }, ` (${call.call_id})`)));
    $('calls').replaceChildren(...(items.length ? items : [el('li', { class: 'muted' }, 'No call is still calling')]));
  } catch (error) {
    showProblem('calls-problem', error);
  }
}

async function refreshAudit() {
  try {
    const audit = await state.api.get('/audit');
    showProblem('audit-problem', null);
    const box = $('audit');
    if (!audit.violations.length) {
      box.replaceChildren(el('p', { class: 'clean' }, `Clean: ${audit.checked_events} events checked, no violation.`));
    } else {
      box.replaceChildren(
        el('p', { class: 'violations' }, `${audit.violations.length} violation(s) in ${audit.checked_events} events:`),
        el('ul', {}, audit.violations.map((v) => el('li', {}, el('code', {}, v.rule), ` ${v.detail} (positions ${v.positions.join(', ')})`))),
      );
    }
  } catch (error) {
    showProblem('audit-problem', error);
  }
}

// ---- wiring ----

function init() {
  $('date').value = today();
  $('sign-in-form').addEventListener('submit', (event) => {
    event.preventDefault();
    signIn({ token: $('token').value, tenant: $('tenant').value.trim(), clinic: $('clinic').value.trim(), date: $('date').value });
  });
  $('sign-out').addEventListener('click', () => signOut(null));
  $('day-date').addEventListener('change', (event) => changeDate(event.target.value));
  $('day-form').addEventListener('submit', (event) => event.preventDefault());
  $('doctor-filter').addEventListener('change', () => renderGrid());
  $('book-form').addEventListener('submit', submitBooking);
  $('book-close').addEventListener('click', () => $('book-dialog').close());
  $('cancel-form').addEventListener('submit', submitCancel);
  $('move-form').addEventListener('submit', submitMove);
  $('move-close').addEventListener('click', () => $('move-dialog').close());
  $('cancel-close').addEventListener('click', () => $('cancel-dialog').close());
  $('travel').addEventListener('input', (event) => travelTo(Number(event.target.value)));
  $('travel-now').addEventListener('click', () => {
    $('travel').value = $('travel').max;
    travelTo(state.history.length);
  });
  // A sign-in link opened in a tab already showing the dashboard changes only the fragment.
  window.addEventListener('hashchange', () => {
    if (!location.hash.includes('token=')) return;
    const session = loadSession();
    if (session) signIn(session);
  });
  const session = loadSession();
  if (session) signIn(session);
  else $('token').focus();
}

init();
