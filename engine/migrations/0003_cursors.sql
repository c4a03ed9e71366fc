-- Slipstream event store, Postgres, version 3: durable cursors of tailing readers (the NATS relay,
-- durable subscriptions). A tracking record: one row per reader name holding the highest `seq` of
-- the events log it has handled; EventStore.write_cursor never moves it backwards.

CREATE TABLE cursors (
    name       text        PRIMARY KEY,
    seq        bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);
