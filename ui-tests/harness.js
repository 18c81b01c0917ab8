// The browser tests' harness: a real `ledger serve` on a temporary data
// directory, a client of its API, and Debian's Chromium driven by
// playwright-core with a fresh profile, watching every page for console
// errors and for requests to any other origin.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..');
export const LEDGER = process.env.LEDGER_BIN || path.join(REPO, 'target', 'debug', 'ledger');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const SCREENSHOTS = path.join(REPO, 'target', 'ui-screenshots');

export const ADMIN = 'ui-admin-secret-000000000';
export const CLIENT = 'ui-client-secret-00000000';
export const OTHER_ADMIN = 'ui-other-admin-secret-000';
export const TENANT = 'kloqo';
export const CLINIC = 'kochi';
export const DATE = '2026-03-02';

/** Waits for what a person would not wait for; failing only after this. */
export const PATIENCE_MS = 15_000;

const CONFIG = `
[[token]]
name = "front-desk-admin"
secret = "${ADMIN}"
tenants = ["${TENANT}"]
role = "admin"

[[token]]
name = "front-desk"
secret = "${CLIENT}"
tenants = ["${TENANT}"]
role = "client"

[[token]]
name = "other-admin"
secret = "${OTHER_ADMIN}"
tenants = ["other"]
role = "admin"

# DATE is fixed, in the past: its day stays open (the tests that need today use today).
[retention]
open_days_past = 36525
`;

/** `ledger serve` on a fresh directory and a free port, until `stop()`. */
export async function startLedger() {
  const dir = mkdtempSync(path.join(tmpdir(), 'ledger-ui-'));
  const config = path.join(dir, 'ledger.toml');
  writeFileSync(config, CONFIG);
  const child = spawn(LEDGER, ['serve', '--config', config, '--data', path.join(dir, 'data'), '--listen', '127.0.0.1:0'], {
    env: { ...process.env, RUST_LOG: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  const origin = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ledger did not listen in time:\n${log}`)), PATIENCE_MS);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const match = /listening on (\S+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(`http://${match[1]}`);
      }
    });
    child.on('exit', (code) => reject(new Error(`ledger exited (${code}) before listening:\n${log}`)));
  });
  const api = new ApiClient(origin);
  await eventually(async () => (await fetch(`${origin}/readyz`)).status === 200, 'the ledger becomes ready');
  return {
    origin,
    api,
    log: () => log,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The ledger's API from outside the browser: what another client of the clinic does. */
export class ApiClient {
  constructor(origin) {
    this.origin = origin;
  }

  async send(method, route, { token = ADMIN, body, key } = {}) {
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (key) headers['Idempotency-Key'] = key;
    const response = await fetch(`${this.origin}/v1/${TENANT}${route}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  async ok(method, route, options) {
    const answer = await this.send(method, route, options);
    if (answer.status >= 300) throw new Error(`${method} ${route}: ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body;
  }

  schedule(doctor, slots, clinic = CLINIC) {
    return this.ok('PUT', `/clinics/${clinic}/doctors/${doctor}/schedule`, { body: { slots_per_day: slots, first_slot: '09:00', slot_minutes: 15 } });
  }

  book(doctor, slot, patient, { token = CLIENT, date = DATE } = {}) {
    return this.ok('POST', '/bookings', { token, body: { clinic: CLINIC, doctor, date, slot, patient } });
  }

  cancel(bookingId) {
    return this.ok('POST', `/bookings/${bookingId}/cancel`, { token: CLIENT, body: {} });
  }

  /** Every event of the tenant (admin). */
  async events() {
    const events = [];
    let from = 1;
    for (;;) {
      const page = await this.ok('GET', `/events?from=${from}&limit=1000`);
      events.push(...page.events);
      if (page.events.length === 0 || page.next === from) return events;
      from = page.next;
    }
  }
}

/** Polls `check` until it holds, failing with `what` after `ms`. */
export async function eventually(check, what, ms = PATIENCE_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      if (await check()) return;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}${last ? ` (${last.message})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Chromium with a fresh profile: playwright's `launch` makes a new empty user-data-dir each time (and deletes it). */
export async function launchBrowser() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    browser,
    async close() {
      await browser.close();
    },
  };
}

export const DESKTOP = { width: 1280, height: 900 };
export const PHONE = { width: 390, height: 844 };

/**
 * A page in a fresh context, watched: console errors, uncaught exceptions and
 * every request whose origin is not the ledger's are recorded; `check()`
 * fails on any. Chromium reports each answer with an error status as a
 * console error; `allowStatuses` names the ones a test provokes on purpose.
 */
export async function openPage(browser, ledger, { viewport = DESKTOP, allowStatuses = [] } = {}) {
  const context = await browser.newContext({ viewport, isMobile: viewport === PHONE, hasTouch: viewport === PHONE });
  const page = await context.newPage();
  const problems = [];
  const requests = [];
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const status = /status of (\d{3})/.exec(message.text());
    if (status && allowStatuses.includes(Number(status[1]))) return;
    problems.push(`console error: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`uncaught: ${error.message}`));
  page.on('request', (request) => {
    requests.push(request.url());
    const url = new URL(request.url());
    if (url.origin !== ledger.origin) problems.push(`request to another origin: ${request.url()}`);
  });
  return {
    page,
    context,
    requests,
    check() {
      if (problems.length) throw new Error(problems.join('\n'));
    },
    async close() {
      await context.close();
    },
  };
}

/** Signs in through the URL fragment. */
export async function signInByFragment(page, ledger, token = ADMIN, date = DATE) {
  await page.goto(`${ledger.origin}/ui/#token=${encodeURIComponent(token)}&tenant=${TENANT}&clinic=${CLINIC}&date=${date}`);
  await page.locator('#live-status.live').waitFor({ timeout: PATIENCE_MS });
}

export function cell(page, doctor, slot) {
  return page.locator(`#grid td[data-doctor="${doctor}"][data-slot="${slot}"]`);
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** axe-core, from the pinned npm package, run in the page (evaluated, so the page's CSP is untouched). */
const AXE = readFileSync(path.join(here, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

export async function seriousViolations(page) {
  await page.evaluate(`${AXE}\n;void 0`);
  const results = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join('; ')}`);
}
