// The clinic dashboard (issue 10) in Debian's Chromium, each test against its
// own `ledger serve` on a temporary data directory. Every page is watched:
// a console error, an uncaught exception or a request to another origin
// fails the test it happens in.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  ADMIN,
  CLIENT,
  CLINIC,
  DATE,
  DESKTOP,
  PATIENCE_MS,
  PHONE,
  TENANT,
  cell,
  eventually,
  launchBrowser,
  openPage,
  screenshot,
  seriousViolations,
  signInByFragment,
  startLedger,
} from './harness.js';

let chromium;
before(async () => {
  chromium = await launchBrowser();
});
after(async () => {
  await chromium?.close();
});

/** Runs `body` with a fresh ledger and a watched page; always cleans up. */
async function scenario(options, body) {
  const ledger = await startLedger();
  const watched = await openPage(chromium.browser, ledger, options);
  try {
    await body({ ledger, api: ledger.api, page: watched.page, watched });
    watched.check();
  } finally {
    await watched.close();
    await ledger.stop();
  }
}

/** Waits for `check` in the page, at most `ms`: the deadline is the assertion. */
async function within(page, ms, what, check, arg) {
  try {
    await page.waitForFunction(check, arg, { timeout: ms, polling: 20 });
  } catch (error) {
    throw new Error(`not within ${ms} ms: ${what} (${error.message.split('\n')[0]})`);
  }
}

const cellState = ([doctor, slot, state, text]) => {
  const td = document.querySelector(`#grid td[data-doctor="${doctor}"][data-slot="${slot}"]`);
  return td && td.dataset.state === state && (!text || td.textContent.includes(text));
};

// A client token's page asks once whether it may see the admin panels: Chromium logs the 403.
test('signs in with the form and with the fragment; the token stays in the tab until sign-out', async () => {
  await scenario({ allowStatuses: [403] }, async ({ ledger, api, page }) => {
    await api.schedule('rao', 4);
    await api.book('rao', 1, 'Asha');
    await page.goto(`${ledger.origin}/ui/`);
    await screenshot(page, 'sign-in-desktop');
    const form = page.locator('#sign-in-form');
    await form.getByLabel('Token').fill(ADMIN);
    await form.getByLabel('Tenant').fill(TENANT);
    await form.getByLabel('Clinic').fill(CLINIC);
    await form.getByLabel('Date').fill(DATE);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#live-status.live').waitFor({ timeout: PATIENCE_MS });
    assert.match(await cell(page, 'rao', 1).textContent(), /A001\s*Asha/);
    const stored = await page.evaluate(() => JSON.parse(sessionStorage.getItem('booking-ledger.dashboard')));
    assert.deepEqual(stored, { token: ADMIN, tenant: TENANT, clinic: CLINIC, date: DATE });
    assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing outlives the tab');

    // A reload of the tab keeps the session; sign-out forgets it.
    await page.reload();
    await page.locator('#live-status.live').waitFor({ timeout: PATIENCE_MS });
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Token').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    assert.equal(await page.locator('#dashboard').isHidden(), true);

    // The fragment signs in directly and leaves the address bar.
    await signInByFragment(page, ledger, CLIENT);
    assert.equal(new URL(page.url()).hash, '', 'the token is taken off the address bar');
    assert.match(await cell(page, 'rao', 1).textContent(), /A001\s*Asha/);
    await page.locator('#admin-note').waitFor();
    assert.equal(await page.locator('#admin').isHidden(), true, 'a client token sees no admin panel');
  });
});

test('a wrong token shows the 401 problem', async () => {
  await scenario({ allowStatuses: [401] }, async ({ ledger, page }) => {
    await page.goto(`${ledger.origin}/ui/`);
    await page.getByLabel('Token').fill('not-a-token-of-this-ledger');
    await page.getByLabel('Tenant').fill(TENANT);
    await page.getByLabel('Clinic').fill(CLINIC);
    await page.getByRole('button', { name: 'Sign in' }).click();
    const alert = page.locator('#sign-in-problem');
    await alert.getByText('Unauthorized').waitFor({ timeout: PATIENCE_MS });
    assert.match(await alert.textContent(), /Unauthorized.*unknown token.*unauthenticated/s);
    assert.equal(await page.locator('#dashboard').isHidden(), true);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused token is not kept');
  });
});

test('a booking made through the API appears in the open grid, and its cancellation frees the slot, over the live stream (no reload)', async () => {
  await scenario({ allowStatuses: [403] }, async ({ ledger, api, page }) => {
    await api.schedule('rao', 6);
    await api.schedule('iyer', 4);
    await signInByFragment(page, ledger, CLIENT);
    const booked = await api.book('iyer', 2, 'Meera');
    await within(page, PATIENCE_MS, 'the booking in the grid', cellState, ['iyer', 2, 'booked', `${booked.token}`]);
    assert.match(await cell(page, 'iyer', 2).textContent(), /Meera/);
    await screenshot(page, 'live-desktop');
    await api.cancel(booked.booking_id);
    await within(page, PATIENCE_MS, 'the cancellation in the grid', cellState, ['iyer', 2, 'free', 'Free']);
    // The doctor filter shows one doctor's column.
    await page.getByLabel('Doctor', { exact: true }).selectOption('iyer');
    assert.equal(await page.locator('#grid thead th').count(), 2);
    assert.equal(await cell(page, 'rao', 0).count(), 0);
  });
});

test('a double click on Book makes exactly one booking', async () => {
  await scenario({ allowStatuses: [403] }, async ({ ledger, api, page, watched }) => {
    await api.schedule('rao', 4);
    await signInByFragment(page, ledger, CLIENT);
    await page.getByRole('button', { name: 'Book rao 09:15' }).click();
    await page.getByLabel('Patient').fill('Ravi');
    await screenshot(page, 'book-dialog-desktop');
    await page.locator('#book-submit').dblclick();
    await within(page, PATIENCE_MS, 'the booking in the grid', cellState, ['rao', 1, 'booked', 'Ravi']);
    const bookings = (await api.events()).filter((e) => e.type === 'booking_created');
    assert.equal(bookings.length, 1, 'one booking');
    assert.equal(bookings[0].data.patient, 'Ravi');
    assert.match(bookings[0].idempotency_key, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a UUID per attempt');
    // The second click was never sent: no refusal, one POST.
    const posts = watched.requests.filter((url) => url.endsWith(`/v1/${TENANT}/bookings`));
    assert.equal(posts.length, 1, `requests: ${posts.join(', ')}`);
    const refused = await api.ok('GET', '/rejections');
    assert.deepEqual(refused.rejections, []);
  });
});

test('booking a taken slot shows slot_taken with the holder; the refusals panel counts it', async () => {
  await scenario({ allowStatuses: [409] }, async ({ ledger, api, page }) => {
    await api.schedule('rao', 4);
    await signInByFragment(page, ledger, ADMIN);
    await page.getByRole('button', { name: 'Book rao 09:30' }).click();
    await page.getByLabel('Patient').fill('Ben');
    // Someone else takes the slot while the form is open.
    const holder = await api.book('rao', 2, 'Asha');
    await page.locator('#book-submit').click();
    const problem = page.locator('#book-problem');
    await problem.getByText('slot_taken').waitFor({ timeout: PATIENCE_MS });
    const text = await problem.textContent();
    assert.match(text, /Conflict/);
    assert.ok(text.includes(`Held by token ${holder.token}`) && text.includes(holder.booking_id), text);
    await screenshot(page, 'slot-taken-desktop');
    await page.getByRole('button', { name: 'Close' }).click();
    const count = page.locator('#refusal-counts tr[data-code="slot_taken"] td.count');
    await eventually(async () => (await count.count()) === 1 && (await count.textContent()) === '1', 'the refusals panel counts it');
    const latest = await page.locator('#refusals-latest li[data-code="slot_taken"]').first().textContent();
    assert.ok(latest.includes(`conflicts with booking:${holder.booking_id}`) && latest.includes('Ben'), latest);
  });
});

test('the slider at an earlier position shows the earlier day, and back at the end the current day', async () => {
  await scenario({ allowStatuses: [403] }, async ({ ledger, api, page }) => {
    await api.schedule('rao', 4);
    const asha = await api.book('rao', 0, 'Asha');
    await api.book('rao', 1, 'Ben');
    await api.cancel(asha.booking_id);
    await signInByFragment(page, ledger, CLIENT);
    await eventually(async () => (await page.locator('#travel').getAttribute('max')) === '4', 'the history of four changes');
    // By keyboard: Home is the day before its first change, then two steps on.
    const slider = page.getByLabel('Time travel');
    await slider.focus();
    await page.keyboard.press('Home');
    await eventually(async () => (await page.locator('#grid caption').textContent()).includes('position 0'), 'the day before anything');
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('ArrowRight');
    await within(page, PATIENCE_MS, 'the day at position 2', cellState, ['rao', 0, 'booked', 'Asha']);
    assert.match(await page.locator('#travel-line').textContent(), /Position 2: rao slot 0 \(09:00\) booked for Asha: token A001/);
    assert.equal(await cell(page, 'rao', 1).getAttribute('data-state'), 'free');
    assert.equal(await page.getByRole('button', { name: /^Book/ }).count(), 0, 'the past is not bookable');
    await screenshot(page, 'travel-desktop');
    await page.keyboard.press('End');
    await within(page, PATIENCE_MS, 'the current day', cellState, ['rao', 1, 'booked', 'Ben']);
    assert.equal(await cell(page, 'rao', 0).getAttribute('data-state'), 'free');
    assert.match(await page.locator('#travel-line').textContent(), /Now \(live\)/);
  });
});

test('a halted campaign can be resumed from the panel; calls still calling and the audit are shown', async () => {
  await scenario({}, async ({ ledger, api, page }) => {
    await api.schedule('rao', 2);
    for (const n of [0, 1, 2]) {
      const call = await api.ok('POST', '/calls', { body: { campaign: 'spring', to: `+1424324211${n}` } });
      await api.ok('POST', `/calls/${call.call_id}/outcome`, { body: { outcome: 'failed' } });
    }
    const calling = await api.ok('POST', '/calls', { body: { campaign: 'autumn', to: '+14243242118' } });
    assert.equal((await api.ok('GET', '/campaigns/spring')).state, 'halted');
    await signInByFragment(page, ledger, ADMIN);
    const spring = page.locator('#campaigns li[data-campaign="spring"]');
    await spring.getByText('Halted').waitFor({ timeout: PATIENCE_MS });
    assert.match(await spring.textContent(), /3 consecutive failed/);
    await page.locator('#calls').getByText(calling.call_id).waitFor({ timeout: PATIENCE_MS });
    await page.locator('#audit').getByText('Clean').waitFor({ timeout: PATIENCE_MS });
    await screenshot(page, 'admin-desktop');
    await page.getByLabel('Reason to resume spring').fill('carrier outage fixed');
    await spring.getByRole('button', { name: 'Resume' }).click();
    await spring.getByText('Running').waitFor({ timeout: PATIENCE_MS });
    assert.equal((await api.ok('GET', '/campaigns/spring')).state, 'running');
    const resumed = (await api.events()).find((e) => e.type === 'campaign_resumed');
    assert.equal(resumed.data.reason, 'carrier outage fixed');
  });
});

test('every screen passes an accessibility scan at desktop and phone sizes, and the phone can book', async () => {
  for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    await scenario({ viewport }, async ({ ledger, api, page }) => {
      await api.schedule('rao', 8);
      await api.schedule('iyer', 8);
      await api.book('rao', 1, 'Asha');
      const call = await api.ok('POST', '/calls', { body: { campaign: 'spring', to: '+14243242110' } });
      await api.ok('POST', '/calls', { body: { campaign: 'spring', to: '+14243242110' } }).catch(() => {});
      assert.ok(call.call_id);
      await page.goto(`${ledger.origin}/ui/`);
      assert.deepEqual(await seriousViolations(page), [], `sign-in at ${size}`);
      if (size === 'phone') await screenshot(page, 'sign-in-phone');
      await signInByFragment(page, ledger, ADMIN);
      await page.locator('#audit').getByText('Clean').waitFor({ timeout: PATIENCE_MS });
      assert.deepEqual(await seriousViolations(page), [], `the day at ${size}`);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px at ${size}`);
      await screenshot(page, `day-${size}`);
      // Booking by touch (phone) or click (desktop), keyboard in the dialog.
      const book = page.getByRole('button', { name: 'Book iyer 09:30' });
      if (size === 'phone') await book.tap();
      else await book.click();
      await page.getByLabel('Patient').fill('Kiran');
      await page.getByLabel('Kind').selectOption('walk_in');
      assert.deepEqual(await seriousViolations(page), [], `the booking form at ${size}`);
      if (size === 'phone') await screenshot(page, 'book-dialog-phone');
      await page.keyboard.press('Enter');
      await within(page, PATIENCE_MS, 'the walk-in booking', cellState, ['iyer', 2, 'booked', 'W001']);
      const travel = page.getByLabel('Time travel');
      await travel.focus();
      await page.keyboard.press('Home');
      await eventually(async () => (await page.locator('#grid caption').textContent()).includes('position 0'), 'time travel');
      assert.deepEqual(await seriousViolations(page), [], `time travel at ${size}`);
      if (size === 'phone') await screenshot(page, 'travel-phone');
    });
  }
});

test('a held slot counts down, a booking moves and checks in, and the waitlist shows its offer', async () => {
  await scenario({}, async ({ ledger, api, page }) => {
    // The clinic has no zone: it keeps UTC, so "today" is UTC's date.
    const today = new Date().toISOString().slice(0, 10);
    await api.schedule('rao', 3);
    const asha = await api.book('rao', 0, 'Asha', { date: today });
    const hold = { clinic: CLINIC, doctor: 'rao', date: today, slot: 1, ttl_secs: 600, patient: 'Ravi' };
    await api.ok('POST', '/holds', { token: CLIENT, body: hold });
    await signInByFragment(page, ledger, ADMIN, today);
    await within(page, PATIENCE_MS, 'slot 1 held, counting down', cellState, ['rao', 1, 'held', 'left']);
    await within(page, PATIENCE_MS, 'the clinic zone is named', () => document.getElementById('who').textContent.includes('UTC'));

    // Move Asha to the free slot 2, through the dialog.
    await cell(page, 'rao', 0).getByRole('button', { name: /^Move A001/ }).click();
    const dialog = page.locator('#move-dialog');
    await dialog.getByLabel('To the free slot').selectOption({ label: 'rao, 09:30' });
    await dialog.getByRole('button', { name: 'Move' }).click();
    await within(page, PATIENCE_MS, 'Asha moved to slot 2', cellState, ['rao', 2, 'booked', 'Asha']);
    const moved = await api.ok('GET', `/bookings/${asha.booking_id}`);
    assert.equal(moved.slot, 2);
    assert.equal(moved.rescheduled_from.slot, 0);

    // Today's booking: checked in from the grid.
    await cell(page, 'rao', 2).getByRole('button', { name: /^Check in/ }).click();
    await eventually(async () => (await api.ok('GET', `/bookings/${asha.booking_id}`)).attendance === 'arrived', 'Asha is checked in');

    // Chen joins while slot 0 is free: offered at once, as the waitlist panel shows.
    await api.ok('POST', `/clinics/${CLINIC}/waitlist`, { token: CLIENT, body: { date: today, patient: 'Chen' } });
    await within(page, PATIENCE_MS, 'the waitlist shows Chen offered', () => document.querySelector('#waitlist li[data-status="offered"]')?.textContent.includes('Chen'));
    await within(page, PATIENCE_MS, 'slot 0 held for Chen', cellState, ['rao', 0, 'held', 'left']);
    await screenshot(page, 'holds-and-waitlist-desktop');
  });
});
