-- KaggleIngest accounts schema.
--
-- Applied by src/db.rs at every start. The file is a list of numbered steps, each
-- introduced by a line `-- step N`. A step runs once, in one transaction, when the
-- database's `PRAGMA user_version` is below N; the same transaction then sets
-- user_version to N. So a fresh file gets every step and an older file only the
-- steps it is missing. Never edit a step that has shipped: append a new one.

-- step 1
CREATE TABLE accounts (
    id               INTEGER PRIMARY KEY,
    -- the address exactly as the user typed it, trimmed
    email            TEXT    NOT NULL,
    -- lowercased: decides uniqueness, so "A@x.io" and "a@x.io" are one account
    email_normalized TEXT    NOT NULL UNIQUE,
    password_hash    TEXT    NOT NULL,
    -- SHA-256 of the API key; the plaintext key is never stored
    key_digest       BLOB    NOT NULL UNIQUE CHECK (length(key_digest) = 32),
    tier             TEXT    NOT NULL DEFAULT 'free'
                             CHECK (tier IN ('free', 'pro', 'enterprise')),
    credits          INTEGER NOT NULL DEFAULT 10 CHECK (credits >= 0),
    -- RFC 3339 UTC with milliseconds, as the API returns it
    created_at       TEXT    NOT NULL
                             DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
