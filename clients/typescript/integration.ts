// A frontend's integration with booking-ledger, written only against the types
// openapi-typescript generates from proto/openapi.json. `make ts-client-check`
// regenerates them and compiles this with tsc --strict: a rename, a dropped
// field or a changed type in the document breaks the build, as it would break
// every client generated from it. The `@ts-expect-error` lines are mistakes the
// document must keep catching (each fails the build if it stops being one).

import type { components, operations, paths } from "./generated/ledger";

type Schemas = components["schemas"];
type Booking = Schemas["BookingView"];
type Problem = Schemas["Problem"];
type BookingRequest = operations["createBooking"]["requestBody"]["content"]["application/json"];
type Slots = operations["getClinicSlots"]["responses"]["200"]["content"]["application/json"];

// Every route a frontend books through is in the document under these paths.
type Routes = keyof paths;
const bookings: Routes = "/v1/{tenant}/bookings";
const cancel: Routes = "/v1/{tenant}/bookings/{booking_id}/cancel";
const slots: Routes = "/v1/{tenant}/clinics/{clinic}/slots";

/** What a call gives back: the answer's own body, or the problem the API sent. */
type Answer<T> = { ok: true; status: number; body: T; replayed: boolean } | { ok: false; status: number; problem: Problem };

async function call<T>(base: string, token: string, method: string, path: string, body?: unknown, key?: string): Promise<Answer<T>> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (key !== undefined) headers["idempotency-key"] = key;
  const init: RequestInit = { method, headers };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(base + path, init);
  if (response.headers.get("content-type")?.startsWith("application/problem+json")) {
    return { ok: false, status: response.status, problem: (await response.json()) as Problem };
  }
  const replayed = response.headers.get("idempotent-replayed") === "true";
  return { ok: true, status: response.status, body: (await response.json()) as T, replayed };
}

export async function book(base: string, token: string, tenant: string, request: BookingRequest): Promise<Answer<Booking>> {
  // One key per attempt: a retry of this call with the same key is answered once.
  const key = crypto.randomUUID();
  return call<Booking>(base, token, "POST", bookings.replace("{tenant}", tenant), request, key);
}

export async function cancelBooking(base: string, token: string, tenant: string, booking: Booking, reason?: string) {
  const body: operations["cancelBooking"]["requestBody"] extends { content: { "application/json": infer B } } ? B : never =
    reason === undefined ? {} : { reason };
  const path = cancel.replace("{tenant}", tenant).replace("{booking_id}", booking.booking_id);
  return call<Booking>(base, token, "POST", path, body, crypto.randomUUID());
}

export async function day(base: string, token: string, tenant: string, clinic: string, date: string): Promise<Answer<Slots>> {
  return call<Slots>(base, token, "GET", `${slots.replace("{tenant}", tenant).replace("{clinic}", clinic)}?date=${date}`);
}

/** What a clinic's front desk shows for an answer. */
export function describe(answer: Answer<Booking>): string {
  if (answer.ok) {
    const b = answer.body;
    const kind: Schemas["KindView"] = b.kind;
    return `${b.token} (${kind}) for ${b.patient}: ${b.doctor}, ${b.date} slot ${b.slot}, ${b.status}${answer.replayed ? " (repeat)" : ""}`;
  }
  const p = answer.problem;
  // slot_taken names the booking holding the slot.
  const holder = p.code === "slot_taken" && p.booking_id ? ` (held by ${p.booking_id})` : "";
  return `${answer.status} ${p.title}: ${p.detail ?? ""}${holder}`;
}

export function freeSlots(view: Slots): number[] {
  return view.doctors.flatMap((doctor) => doctor.slots.filter((slot) => slot.state === "free").map((slot) => slot.slot));
}

export const sample: BookingRequest = {
  clinic: "kochi",
  doctor: "rao",
  date: "2026-03-02",
  slot: 3,
  patient: "Asha",
  kind: "advance",
};

// Mistakes the document must keep refusing.
// @ts-expect-error: a slot is a number
export const slotAsText: BookingRequest = { ...sample, slot: "3" };
// @ts-expect-error: the patient is required
export const noPatient: BookingRequest = { clinic: "kochi", doctor: "rao", date: "2026-03-02", slot: 3 };
// @ts-expect-error: kinds are advance and walk_in only
export const unknownKind: BookingRequest = { ...sample, kind: "urgent" };
// @ts-expect-error: a route the API does not have
export const noSuchRoute: Routes = "/v1/{tenant}/appointments";
