-- Replicas report the last key event they have applied to their cache, with a
-- heartbeat that doubles as a lease: a replica that cannot renew it stops
-- trusting its cache. Mutations that wait for propagation read this table.
CREATE TABLE replicas (
    id               uuid PRIMARY KEY,
    name             text NOT NULL,
    last_applied_seq bigint NOT NULL DEFAULT 0,
    heartbeat_at     timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX replicas_heartbeat ON replicas (heartbeat_at);
