-- Account lifecycle: verified emails, access tokens that end with a password change, the
-- logins (sessions) a user can see and end, and single-use tokens for email links.
-- depends: 0008_events_webhooks

-- Accounts that existed before verification was asked for are not verified (the seed's
-- contract users are created verified by bin/seed).
ALTER TABLE users
    ADD COLUMN email_verified   boolean NOT NULL DEFAULT false,
    -- Access tokens carry the generation they were issued in (claim `gen`); a password
    -- change, logout-all, deactivation and deletion add one, and every access token of an
    -- older generation is refused at once. A counter, not a time: exact within one second
    -- and blind to clock skew between instances.
    ADD COLUMN token_generation integer NOT NULL DEFAULT 0;

-- One login: the chain of refresh tokens started by POST /api/auth/login (refresh_tokens
-- family_id). Access tokens carry its id (claim `sid`) so GET /sessions can say `current`.
CREATE TABLE sessions (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id    uuid        NOT NULL UNIQUE,
    user_agent   text        CHECK (char_length(user_agent) <= 512),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_user_idx ON sessions (user_id, created_at DESC, id DESC);

-- the logins that exist already become sessions, then every refresh token belongs to one
INSERT INTO sessions (user_id, family_id, created_at, last_used_at)
SELECT user_id, family_id, min(created_at), max(created_at)
  FROM refresh_tokens
 GROUP BY user_id, family_id;

ALTER TABLE refresh_tokens
    ADD CONSTRAINT refresh_tokens_family_fkey
    FOREIGN KEY (family_id) REFERENCES sessions (family_id) ON DELETE CASCADE;

-- Password reset and email verification tokens. The token itself is never stored: it is
-- HMAC(SECRET_KEY, nonce), so the worker that emails it can derive it while neither this
-- table nor the job queue holds anything a leak could use; lookups go by its sha256.
CREATE TABLE account_tokens (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    text        NOT NULL CHECK (purpose IN ('password_reset', 'email_verification')),
    email      text        NOT NULL,  -- the address the link goes to (and, verified, proves)
    nonce      bytea       NOT NULL,
    token_hash bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    emailed_at timestamptz,  -- claimed by the job that sends it: one email per token
    used_at    timestamptz
);
-- a newer request voids the user's older tokens of the same purpose
CREATE INDEX account_tokens_user_idx ON account_tokens (user_id, purpose);
