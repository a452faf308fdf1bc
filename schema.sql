-- KaggleIngest accounts schema.
--
-- Applied by src/db/migrate.rs at every start. The file is a list of numbered steps, each
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

-- step 2
-- Keys can be revoked (key_digest NULL: no key works until a rotation) and
-- rotated (key_created_at). SQLite cannot relax NOT NULL in place, so the
-- table is rebuilt; ids, hashes, digests and credits are copied unchanged.
CREATE TABLE accounts_v2 (
    id               INTEGER PRIMARY KEY,
    email            TEXT    NOT NULL,
    email_normalized TEXT    NOT NULL UNIQUE,
    password_hash    TEXT    NOT NULL,
    -- SHA-256 of the current API key; NULL once revoked
    key_digest       BLOB    UNIQUE CHECK (key_digest IS NULL OR length(key_digest) = 32),
    tier             TEXT    NOT NULL DEFAULT 'free'
                             CHECK (tier IN ('free', 'pro', 'enterprise')),
    credits          INTEGER NOT NULL DEFAULT 10 CHECK (credits >= 0),
    created_at       TEXT    NOT NULL
                             DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- when the current key was issued (signup or rotation)
    key_created_at   TEXT    NOT NULL
                             DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
INSERT INTO accounts_v2
       (id, email, email_normalized, password_hash, key_digest, tier, credits, created_at, key_created_at)
SELECT  id, email, email_normalized, password_hash, key_digest, tier, credits, created_at, created_at
  FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_v2 RENAME TO accounts;

-- step 3
-- email_normalized becomes the Unicode-aware key of src/email.rs: the local
-- part folded by Unicode's compatibility caseless match, `@`, the domain in
-- its IDNA ASCII form. SQLite cannot compute that, so this step has no SQL:
-- migrate() in src/db/migrate.rs recomputes every row's key in Rust from `email`, in
-- this step's transaction, and stops naming the accounts if two collide.
