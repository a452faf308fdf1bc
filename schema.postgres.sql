-- KaggleIngest accounts schema for PostgreSQL (the SQLite one is schema.sql).
--
-- Applied by src/db/postgres/migrate.rs at every start, like schema.sql: numbered
-- steps, each introduced by a line `-- step N`. Each node that starts takes an
-- advisory lock, reads the version in kaggleingest_schema, and runs the steps
-- above it in one transaction together with the version bump, so nodes
-- starting together never race and a failed step leaves nothing behind.
-- Never edit a step that has shipped: append a new one.
--
-- The columns match schema.sql's latest step, so `kaggleingest copy` moves
-- every account unchanged: timestamps are kept to the millisecond (what the
-- API shows), email_normalized is src/email.rs's key.

-- step 1
CREATE TABLE accounts (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- the address exactly as the user typed it, trimmed
    email            text        NOT NULL,
    -- src/email.rs's key: decides uniqueness, so lookalike spellings of one
    -- mailbox are one account
    email_normalized text        NOT NULL
                                 CONSTRAINT accounts_email_normalized_key UNIQUE,
    password_hash    text        NOT NULL,
    -- SHA-256 of the current API key (the plaintext is never stored); NULL once revoked
    key_digest       bytea       CONSTRAINT accounts_key_digest_key UNIQUE
                                 CHECK (key_digest IS NULL OR length(key_digest) = 32),
    tier             text        NOT NULL DEFAULT 'free'
                                 CONSTRAINT accounts_tier_check
                                 CHECK (tier IN ('free', 'pro', 'enterprise')),
    -- src/db/postgres/accounts.rs names these constraints in its errors
    credits          bigint      NOT NULL DEFAULT 10
                                 CONSTRAINT accounts_credits_check CHECK (credits >= 0),
    created_at       timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
    -- when the current key was issued (signup or rotation)
    key_created_at   timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now())
);
