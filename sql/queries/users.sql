-- Users and refresh tokens. Timestamps leave as RFC 3339 text via api_time().

-- name: insert_user(email, password_hash, full_name, role)^
-- Registration and seeding; a duplicate email raises unique_violation (users_email_lower_key).
INSERT INTO users (email, password_hash, full_name, role)
     VALUES (:email, :password_hash, :full_name, :role)
  RETURNING id, email, full_name, role, is_active,
            api_time(created_at) AS created_at, api_time(updated_at) AS updated_at;

-- name: get_user(id)^
-- The public user by id.
SELECT id, email, full_name, role, is_active,
       api_time(created_at) AS created_at, api_time(updated_at) AS updated_at
  FROM users
 WHERE id = :id;

-- name: get_user_for_update(id)^
-- The user with its password hash, row-locked for a read-modify-write update.
SELECT id, email, full_name, role, is_active, password_hash
  FROM users
 WHERE id = :id
   FOR UPDATE;

-- name: get_login(email)^
-- What login needs: the hash and whether the account may sign in.
SELECT id, role, is_active, password_hash
  FROM users
 WHERE lower(email) = lower(:email);

-- name: get_user_state(id)^
-- Per-request check of an access token's user: still there, still active, same role.
SELECT role, is_active
  FROM users
 WHERE id = :id;

-- name: list_users(role, q, limit, offset)
-- Admin listing, filters optional; total comes with every row (one query per page).
-- q is a literal, case-insensitive substring (strpos, not LIKE: `%` and `_` match themselves).
SELECT id, email, full_name, role, is_active,
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

-- name: update_user(id, email, full_name, role, is_active, password_hash)^
-- Partial update: a NULL parameter keeps the column's value.
UPDATE users
   SET email         = coalesce(:email, email),
       full_name     = coalesce(:full_name, full_name),
       role          = coalesce(:role, role),
       is_active     = coalesce(:is_active, is_active),
       password_hash = coalesce(:password_hash, password_hash),
       updated_at    = now()
 WHERE id = :id
 RETURNING id, email, full_name, role, is_active,
           api_time(created_at) AS created_at, api_time(updated_at) AS updated_at;

-- name: user_has_orders(id)$
-- A user with orders is deactivated instead of deleted: orders are never lost.
SELECT EXISTS (SELECT 1 FROM orders WHERE user_id = :id);

-- name: delete_user(id)!
-- Removes a user without orders (their refresh tokens go with them).
DELETE FROM users WHERE id = :id;

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
