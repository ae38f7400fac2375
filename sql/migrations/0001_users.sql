-- Users and their refresh tokens.
-- A "login" is one chain of refresh tokens started by POST /api/auth/login (family_id),
-- rotation keeps the family, reuse of a rotated token revokes the whole family.

-- Timestamps leave the database as RFC 3339 UTC text with microseconds and a Z,
-- exactly as the API contract spells them (inlined by the planner).
CREATE FUNCTION api_time(ts timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');

CREATE TABLE users (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         text        NOT NULL CHECK (char_length(email) <= 254),
    password_hash text        NOT NULL,
    full_name     text        NOT NULL DEFAULT '' CHECK (char_length(full_name) <= 200),
    role          text        NOT NULL DEFAULT 'CUSTOMER'
                              CHECK (role IN ('ADMIN', 'EDITOR', 'CUSTOMER')),
    is_active     boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Emails are compared case-insensitively; the app also stores them lower-cased.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE INDEX users_role_idx ON users (role, id);

CREATE TABLE refresh_tokens (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   uuid        NOT NULL,
    -- sha256 of the token: a leaked table does not leak usable tokens
    token_hash  bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);

CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id) WHERE revoked_at IS NULL;
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
