-- Keygate's schema: organizations, keys and the audit log of key events.
-- The database enforces what it can; the service validates the rest.

CREATE TABLE organizations (
    id           uuid PRIMARY KEY,
    seq          bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 64),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id                         uuid PRIMARY KEY,
    seq                        bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    organization_id            uuid REFERENCES organizations (id) ON DELETE RESTRICT,
    kind                       text NOT NULL CHECK (kind IN ('organization', 'system')),
    environment                text NOT NULL CHECK (environment IN ('live', 'test')),
    name                       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    description                text NOT NULL DEFAULT '' CHECK (char_length(description) <= 500),
    scopes                     text[] NOT NULL CHECK (cardinality(scopes) >= 1),
    allowed_cidrs              text[] NOT NULL DEFAULT '{}' CHECK (cardinality(allowed_cidrs) <= 100),
    expires_at                 timestamptz,
    metadata                   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    lock_scopes                boolean NOT NULL DEFAULT false,
    secret_hash                text NOT NULL,
    previous_secret_hash       text,
    previous_secret_expires_at timestamptz,
    disabled_at                timestamptz,
    revoked_at                 timestamptz,
    version                    bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_by                 uuid,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    last_used_at               timestamptz,
    CONSTRAINT api_keys_system_has_no_organization
        CHECK ((kind = 'system') = (organization_id IS NULL)),
    CONSTRAINT api_keys_previous_secret_has_deadline
        CHECK ((previous_secret_hash IS NULL) = (previous_secret_expires_at IS NULL))
);

CREATE INDEX api_keys_organization_seq ON api_keys (organization_id, seq);

-- The audit log. Rows outlive the keys they name, so there is no foreign key.
CREATE TABLE key_events (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id          uuid NOT NULL,
    organization_id uuid,
    environment     text NOT NULL CHECK (environment IN ('live', 'test')),
    actor_key_id    uuid,
    action          text NOT NULL CHECK (action IN
                        ('created', 'updated', 'rotated', 'disabled', 'enabled', 'revoked', 'deleted')),
    changes         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(changes) = 'object'),
    occurred_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX key_events_key_seq ON key_events (key_id, seq);
CREATE INDEX key_events_organization_seq ON key_events (organization_id, seq);
