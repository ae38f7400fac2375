-- Address book: a user's shipping addresses (at most a fixed number each, at most one default).
-- Every statement is scoped by user_id: another user's address is simply not found.

-- name: lock_address_book(user_id)^
-- Serialises the writes to one user's book (the size limit and the default would race
-- otherwise). NO KEY UPDATE, not UPDATE: it does not block the KEY SHARE lock that inserts
-- referencing the user (orders, carts, addresses) take. An inactive or erased account
-- locks nothing: account deletion holds the same row lock, so no address outlives it.
SELECT id
  FROM users
 WHERE id = :user_id AND is_active
   FOR NO KEY UPDATE;

-- name: clear_default_address(user_id, keep_id)!
-- Before another address becomes the default (the partial unique index allows one);
-- `keep_id`: the address about to become it (NULL on create).
UPDATE addresses
   SET is_default = false,
       updated_at = now()
 WHERE user_id = :user_id
   AND is_default
   AND id IS DISTINCT FROM :keep_id::bigint;

-- name: insert_address(user_id, full_name, line1, line2, city, region, postal_code, country, phone, is_default, max_addresses)^
-- A new address unless the book is full (no row then). Run after lock_address_book, so the
-- count sees every address committed before the lock was granted. The first address is
-- the default whatever was asked.
INSERT INTO addresses (user_id, full_name, line1, line2, city, region, postal_code, country,
                       phone, is_default)
SELECT :user_id, :full_name, :line1, :line2, :city, :region, :postal_code, :country,
       :phone, :is_default OR book.size = 0
  FROM (SELECT count(*) AS size FROM addresses WHERE user_id = :user_id) book
 WHERE book.size < :max_addresses
RETURNING id, full_name, line1, line2, city, region, postal_code, country, phone, is_default,
          api_time(created_at) AS created_at, api_time(updated_at) AS updated_at;

-- name: get_address(id, user_id)^
-- One of the user's addresses.
SELECT id, full_name, line1, line2, city, region, postal_code, country, phone, is_default,
       api_time(created_at) AS created_at, api_time(updated_at) AS updated_at
  FROM addresses
 WHERE id = :id AND user_id = :user_id;

-- name: list_addresses(user_id, limit, offset)
-- The user's book by id; the total rides on every row.
SELECT id, full_name, line1, line2, city, region, postal_code, country, phone, is_default,
       api_time(created_at) AS created_at, api_time(updated_at) AS updated_at,
       count(*) OVER () AS total
  FROM addresses
 WHERE user_id = :user_id
 ORDER BY id
 LIMIT :limit OFFSET :offset;

-- name: count_addresses(user_id)$
-- Total for a page past the end (where no row carries the window count).
SELECT count(*) FROM addresses WHERE user_id = :user_id;

-- name: update_address(id, user_id, full_name, line1, line2, city, region, postal_code, country, phone, is_default)^
-- Partial update: a NULL parameter keeps the column. Setting is_default true needs
-- clear_default_address first, in the same transaction.
UPDATE addresses
   SET full_name   = coalesce(:full_name, full_name),
       line1       = coalesce(:line1, line1),
       line2       = coalesce(:line2, line2),
       city        = coalesce(:city, city),
       region      = coalesce(:region, region),
       postal_code = coalesce(:postal_code, postal_code),
       country     = coalesce(:country, country),
       phone       = coalesce(:phone, phone),
       is_default  = coalesce(:is_default, is_default),
       updated_at  = now()
 WHERE id = :id AND user_id = :user_id
RETURNING id, full_name, line1, line2, city, region, postal_code, country, phone, is_default,
          api_time(created_at) AS created_at, api_time(updated_at) AS updated_at;

-- name: delete_address(id, user_id)!
-- Deleting the default leaves the user with none (no other address is promoted).
DELETE FROM addresses WHERE id = :id AND user_id = :user_id;
