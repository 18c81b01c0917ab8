-- The table of benches/pg/server.rs, created by benches/pg/run.sh (`make bench-pg`).
-- One row per booking. The unique key refuses a second booking of a slot, as the
-- ledger does; the primary key is the index a "GET /bookings/{id}" would need.
CREATE TABLE bookings (
    booking_id uuid PRIMARY KEY,
    tenant text NOT NULL,
    clinic text NOT NULL,
    doctor text NOT NULL,
    date date NOT NULL,
    slot integer NOT NULL,
    patient text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, clinic, doctor, date, slot)
);
