-- Users, their logins (sessions and refresh tokens) and their account tokens.
-- Timestamps leave as RFC 3339 text via api_time().

-- name: insert_user(email, password_hash, full_name, role)^
-- Registration and seeding; a duplicate email raises unique_violation (users_email_lower_key).
INSERT INTO users (email, password_hash, full_name, role)
     VALUES (:email, :password_hash, :full_name, :role)
  RETURNING id, email, full_name, role, is_active, email_verified,
            api_time(created_at) AS created_at, api_time(updated_at) AS updated_at;

-- name: get_user(id)^
-- The public user by id.
SELECT id, email, full_name, role, is_active, email_verified,
       api_time(created_at) AS created_at, api_time(updated_at) AS updated_at
  FROM users
 WHERE id = :id;

-- name: get_user_for_update(id)^
-- The user with its password hash, row-locked for a read-modify-write update. Every change
-- to a user's logins takes this lock first, so they happen one after the other.
SELECT id, email, full_name, role, is_active, email_verified, token_generation, password_hash
  FROM users
 WHERE id = :id
   FOR UPDATE;

-- name: get_password_hash(id)$
-- A check of the caller's own password before a change that needs it.
SELECT password_hash FROM users WHERE id = :id;

-- name: get_login(email)^
-- What login needs: the hash, whether the account may sign in, the tokens' generation.
SELECT id, role, is_active, token_generation, password_hash
  FROM users
 WHERE lower(email) = lower(:email);

-- name: get_user_state(id)^
-- Per-request check of an access token's user (when the worker's memory cannot answer).
SELECT role, is_active, token_generation, email_verified
  FROM users
 WHERE id = :id;

-- name: list_users(role, q, limit, offset)
-- Admin listing, filters optional; total comes with every row (one query per page).
-- q is a literal, case-insensitive substring (strpos, not LIKE: `%` and `_` match themselves).
SELECT id, email, full_name, role, is_active, email_verified,
       api_time(created_at) AS created_at, api_time(updated_at) AS updated_at,
       count(*) OVER () AS total
  FROM users
 WHERE (:role::text IS NULL OR role = :role)
   AND (:q::text IS NULL OR strpos(lower(email), lower(:q)) > 0
                         OR strpos(lower(full_name), lower(:q)) > 0)
 ORDER BY id
 LIMIT :limit OFFSET :offset;

-- name: count_users(role, q)$
-- Total for a page past the end (where no row carries the window count).
SELECT count(*)
  FROM users
 WHERE (:role::text IS NULL OR role = :role)
   AND (:q::text IS NULL OR strpos(lower(email), lower(:q)) > 0
                         OR strpos(lower(full_name), lower(:q)) > 0);

-- name: update_user(id, email, full_name, role, is_active, password_hash, end_tokens)^
-- Partial update: a NULL parameter keeps the column's value. A new email is not verified
-- yet; end_tokens ends every access token issued before (a new generation).
UPDATE users
   SET email            = coalesce(:email, email),
       email_verified   = email_verified AND (:email::text IS NULL
                                              OR lower(:email) = lower(email)),
       full_name        = coalesce(:full_name, full_name),
       role             = coalesce(:role, role),
       is_active        = coalesce(:is_active, is_active),
       password_hash    = coalesce(:password_hash, password_hash),
       token_generation = token_generation + CASE WHEN :end_tokens THEN 1 ELSE 0 END,
       updated_at       = now()
 WHERE id = :id
 RETURNING id, email, full_name, role, is_active, email_verified,
           api_time(created_at) AS created_at, api_time(updated_at) AS updated_at;

-- name: end_access_tokens(id)!
-- logout-all: every access token issued before now is refused (tokens carry the generation).
UPDATE users SET token_generation = token_generation + 1 WHERE id = :id;

-- name: set_password(id, password_hash, proven_email)!
-- A password reset: the new hash, a new token generation, and the email verified when the
-- link that proved it went to the account's current address.
UPDATE users
   SET password_hash    = :password_hash,
       token_generation = token_generation + 1,
       email_verified   = email_verified OR lower(email) = lower(:proven_email),
       updated_at       = now()
 WHERE id = :id;

-- name: mark_email_verified(id, email)^
-- The verification link was followed: only the address it was sent to is verified.
UPDATE users
   SET email_verified = true,
       updated_at     = now()
 WHERE id = :id
   AND lower(email) = lower(:email)
   AND is_active
 RETURNING id, email, full_name, role, is_active, email_verified,
           api_time(created_at) AS created_at, api_time(updated_at) AS updated_at;

-- name: erase_user(id, placeholder)!
-- Account deletion: the personal data goes, the row (and its orders) stays. The email
-- becomes a unique address nobody can receive mail at (RFC 2606 .invalid), so the old one
-- may register again; '!' is no bcrypt hash, so no password ever matches. Its logins
-- (refresh tokens cascade with their sessions), its link tokens, its address book and its
-- cart go too, and the addresses its emails were sent to are forgotten. Its orders keep
-- their own copies of the shipping address (accounting).
WITH erased AS (
    UPDATE users u
       SET email            = :placeholder,
           full_name        = '',
           password_hash    = '!',
           is_active        = false,
           email_verified   = false,
           token_generation = u.token_generation + 1,
           updated_at       = now()
      FROM users old
     WHERE u.id = :id AND old.id = u.id
 RETURNING old.email
),
sessions_gone AS (
    DELETE FROM sessions WHERE user_id = :id
),
tokens_gone AS (
    DELETE FROM account_tokens WHERE user_id = :id
),
addresses_gone AS (
    DELETE FROM addresses WHERE user_id = :id
),
cart_gone AS (
    -- its lines cascade
    DELETE FROM carts WHERE user_id = :id
)
UPDATE sent_emails
   SET recipient = :placeholder
  FROM erased
 WHERE sent_emails.recipient = erased.email;

-- name: user_has_orders(id)$
-- A user with orders is deactivated instead of deleted: orders are never lost.
SELECT EXISTS (SELECT 1 FROM orders WHERE user_id = :id);

-- name: delete_user(id)!
-- Removes a user without orders (their logins and tokens go with them).
DELETE FROM users WHERE id = :id;

-- ------------------------------------------------------------------ logins

-- name: insert_session(user_id, family_id, user_agent)$
-- A login starts: its id is the session id clients see.
INSERT INTO sessions (user_id, family_id, user_agent)
VALUES (:user_id, :family_id, :user_agent)
RETURNING id;

-- name: touch_session(family_id, user_agent)$
-- A rotation: the login was used now, from this client.
UPDATE sessions
   SET last_used_at = now(),
       user_agent   = coalesce(:user_agent, user_agent)
 WHERE family_id = :family_id
RETURNING id;

-- name: list_sessions(user_id, limit)
-- The user's live logins (a refresh token of the chain still usable), newest first.
SELECT s.id, api_time(s.created_at) AS created_at, api_time(s.last_used_at) AS last_used_at,
       s.user_agent
  FROM sessions s
 WHERE s.user_id = :user_id
   AND EXISTS (SELECT 1
                 FROM refresh_tokens t
                WHERE t.family_id = s.family_id
                  AND t.revoked_at IS NULL
                  AND t.expires_at > now())
 ORDER BY s.created_at DESC, s.id DESC
 LIMIT :limit;

-- name: revoke_session(id, user_id)!
-- DELETE /sessions/{id}: that login's chain is revoked; 0 rows: not the user's live login.
UPDATE refresh_tokens t
   SET revoked_at = now()
  FROM sessions s
 WHERE s.id = :id
   AND s.user_id = :user_id
   AND t.family_id = s.family_id
   AND t.revoked_at IS NULL
   AND t.expires_at > now();

-- name: insert_refresh_token(user_id, family_id, token_hash, expires_at)!
-- One link of a login's chain; only the sha256 of the token is stored.
INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at)
     VALUES (:user_id, :family_id, :token_hash, to_timestamp(:expires_at));

-- name: revoke_refresh_token(token_hash)^
-- Rotation and logout: revoke one live token; no row means it was unknown or already revoked.
UPDATE refresh_tokens
   SET revoked_at = now()
 WHERE token_hash = :token_hash
   AND revoked_at IS NULL
   AND expires_at > now()
 RETURNING user_id, family_id;

-- name: get_refresh_token(token_hash)^
-- Tells a revoked token (reuse: revoke the family) from an unknown one.
SELECT user_id, family_id, revoked_at IS NOT NULL AS revoked
  FROM refresh_tokens
 WHERE token_hash = :token_hash;

-- name: revoke_refresh_family(family_id)!
-- Reuse detection: a rotated token came back, so the whole login is revoked.
UPDATE refresh_tokens
   SET revoked_at = now()
 WHERE family_id = :family_id
   AND revoked_at IS NULL;

-- name: revoke_user_refresh_tokens(user_id)!
-- Logout everywhere, deactivation, role or password change.
UPDATE refresh_tokens
   SET revoked_at = now()
 WHERE user_id = :user_id
   AND revoked_at IS NULL;

-- name: delete_expired_refresh_tokens()!
-- Housekeeping: an expired refresh token can never be used again. Revoked ones are kept
-- until they expire: presenting one is how reuse (a stolen token) is detected.
DELETE FROM refresh_tokens WHERE expires_at < now();

-- name: delete_ended_sessions()!
-- Housekeeping, after the above: a login without refresh tokens left is over.
DELETE FROM sessions s
 WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = s.family_id);

-- ------------------------------------------------------------------ account tokens
-- A token's email job is deferred in the statement that issues it (procrastinate's own
-- defer function): the token and its email commit together or not at all.

-- name: issue_password_reset(email, nonce, token_hash, ttl_seconds)$
-- POST /password-reset: for an active account with this email, void its older reset tokens,
-- store the new one and defer its email; for any other email, nothing. One statement
-- either way, so a known and an unknown email cost the same round trip.
WITH target AS (
    SELECT id, email FROM users WHERE lower(email) = lower(:email) AND is_active FOR UPDATE
),
voided AS (
    DELETE FROM account_tokens t
     USING target
     WHERE t.user_id = target.id AND t.purpose = 'password_reset'
),
issued AS (
    INSERT INTO account_tokens (user_id, purpose, email, nonce, token_hash, expires_at)
    SELECT id, 'password_reset', email, :nonce, :token_hash,
           now() + make_interval(secs => :ttl_seconds)
      FROM target
 RETURNING id
)
SELECT cardinality(procrastinate_defer_jobs_v1(ARRAY(
           SELECT ROW('emails', 'send_account_email', 0, NULL, NULL,
                      jsonb_build_object('token_id', id), NULL)::procrastinate_job_to_defer_v1
             FROM issued)));

-- name: issue_email_verification(user_id, nonce, token_hash, ttl_seconds)$
-- Registration, an email change, a resend: unless the account's email is verified already,
-- void its older verification tokens, store this one for its current address and defer its
-- email. NULL: nothing to verify, nothing sent.
WITH target AS (
    SELECT id, email FROM users
     WHERE id = :user_id AND is_active AND NOT email_verified
       FOR UPDATE
),
voided AS (
    DELETE FROM account_tokens t
     USING target
     WHERE t.user_id = target.id AND t.purpose = 'email_verification'
),
issued AS (
    INSERT INTO account_tokens (user_id, purpose, email, nonce, token_hash, expires_at)
    SELECT id, 'email_verification', email, :nonce, :token_hash,
           now() + make_interval(secs => :ttl_seconds)
      FROM target
 RETURNING id
)
SELECT cardinality(procrastinate_defer_jobs_v1(ARRAY(
           SELECT ROW('emails', 'send_account_email', 0, NULL, NULL,
                      jsonb_build_object('token_id', id), NULL)::procrastinate_job_to_defer_v1
             FROM issued)));

-- name: find_account_token(token_hash, purpose)$
-- Whether a token is live, before paying for a password hash.
SELECT EXISTS (SELECT 1 FROM account_tokens
                WHERE token_hash = :token_hash AND purpose = :purpose
                  AND used_at IS NULL AND expires_at > now());

-- name: use_account_token(token_hash, purpose)^
-- Spends a live token (single use); no row: unknown, used, expired or voided.
UPDATE account_tokens
   SET used_at = now()
 WHERE token_hash = :token_hash
   AND purpose = :purpose
   AND used_at IS NULL
   AND expires_at > now()
RETURNING user_id, email;

-- name: void_account_tokens(user_id, purpose)!
-- A reset went through: the user's other reset links die with it.
DELETE FROM account_tokens
 WHERE user_id = :user_id AND purpose = :purpose AND used_at IS NULL;

-- name: claim_account_email(id)^
-- The email job claims its token inside the transaction that sends the email: a token
-- already emailed, spent, voided, expired or no longer the account's address sends nothing.
UPDATE account_tokens t
   SET emailed_at = now()
  FROM users u
 WHERE t.id = :id
   AND u.id = t.user_id
   AND t.emailed_at IS NULL
   AND t.used_at IS NULL
   AND t.expires_at > now()
   AND lower(u.email) = lower(t.email)
RETURNING t.purpose, t.email, t.nonce, u.full_name,
          api_time(t.expires_at) AS expires_at;

-- name: delete_spent_account_tokens()!
-- Housekeeping: a used or expired token can never be used again.
DELETE FROM account_tokens WHERE used_at IS NOT NULL OR expires_at < now();
