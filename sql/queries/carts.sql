-- Carts: one per user (user_id) or per guest (token_hash = sha256 of X-Cart-Token).
-- Every write first locks its cart row (lock_or_make_user_cart, lock_guest_cart or
-- lock_claim_carts) in its transaction, so the line count it then checks against
-- CART_LINES_MAX is exact whatever runs concurrently.

-- name: insert_guest_cart(token_hash, ttl)^
-- A new, empty guest cart; only the token's digest is kept.
INSERT INTO carts (token_hash, expires_at)
     VALUES (:token_hash, now() + make_interval(secs => :ttl))
  RETURNING id, api_time(updated_at) AS updated_at, api_time(expires_at) AS expires_at;

-- name: ensure_user_cart(user_id)!
-- The user's empty cart on first use (nothing when it exists; a concurrent first use wins).
INSERT INTO carts (user_id)
SELECT :user_id
 WHERE NOT EXISTS (SELECT 1 FROM carts WHERE user_id = :user_id)
ON CONFLICT (user_id) DO NOTHING;

-- name: lock_or_make_user_cart(user_id)$
-- The user's cart id, row-locked until the transaction ends; made when missing, in the same
-- round trip (NULL when a concurrent first use made it meanwhile: run it again).
WITH found AS (
    SELECT id FROM carts WHERE user_id = :user_id FOR UPDATE
),
made AS (
    INSERT INTO carts (user_id)
    SELECT :user_id
     WHERE NOT EXISTS (SELECT 1 FROM found)
    ON CONFLICT (user_id) DO NOTHING
    RETURNING id
)
SELECT id FROM found
 UNION ALL
SELECT id FROM made;

-- name: read_cart_lines(cart_id)
-- A checkout's lines, read after its cart row was locked (so in a snapshot that holds the
-- latest lines), in the order they were first added.
SELECT product_id, quantity
  FROM cart_items
 WHERE cart_id = :cart_id
 ORDER BY added;

-- name: lock_guest_cart(token_hash)$
-- The live guest cart's id (NULL: unknown or expired), row-locked until the transaction ends.
SELECT id
  FROM carts
 WHERE token_hash = :token_hash AND user_id IS NULL AND expires_at > now()
   FOR UPDATE;

-- name: lock_claim_carts(user_id, token_hash)
-- Claim: the user's cart and the live guest cart, row-locked in id order (so two claims
-- never wait on each other crosswise). A guest cart claimed, purged or expired meanwhile
-- is not returned.
SELECT id, user_id
  FROM carts
 WHERE user_id = :user_id
    OR (token_hash = :token_hash AND user_id IS NULL AND expires_at > now())
 ORDER BY id
   FOR UPDATE;

-- name: get_cart(user_id, token_hash, currency)^
-- The whole cart in one statement: the user's (user_id) or the live guest cart
-- (token_hash); no row when there is none. Names and prices are the products' current
-- ones; a line whose product row is gone shows its snapshot and is unavailable. The
-- subtotal counts available lines only; lines come in the order first added.
WITH cart AS (
    SELECT id, updated_at, expires_at FROM carts WHERE user_id = :user_id
     UNION ALL
    SELECT id, updated_at, expires_at
      FROM carts
     WHERE token_hash = :token_hash AND user_id IS NULL AND expires_at > now()
)
SELECT c.id, l.items, coalesce(l.subtotal_cents, 0)::bigint AS subtotal_cents,
       :currency::text AS currency,
       api_time(c.updated_at) AS updated_at, api_time(c.expires_at) AS expires_at
  FROM cart c
 CROSS JOIN LATERAL (
    SELECT coalesce(json_agg(json_build_object(
                        'product_id', x.product_id, 'name', x.name, 'quantity', x.quantity,
                        'unit_price_cents', x.unit_price_cents,
                        'line_total_cents', x.unit_price_cents * x.quantity,
                        'available', x.available,
                        'in_stock', x.available AND x.quantity <= x.stock)
                    ORDER BY x.added), '[]') AS items,
           sum(x.unit_price_cents * x.quantity) FILTER (WHERE x.available) AS subtotal_cents
      FROM (SELECT i.product_id, i.quantity, i.added,
                   coalesce(p.name, i.name) AS name,
                   coalesce(p.price_cents, i.unit_price_cents) AS unit_price_cents,
                   coalesce(p.is_active, false) AS available,
                   coalesce(p.stock, 0) AS stock
              FROM cart_items i
              LEFT JOIN products p ON p.id = i.product_id
             WHERE i.cart_id = c.id) x
 ) l;

-- name: set_cart_line(cart_id, product_id, quantity, max_lines, ttl)^
-- Sets one line of a locked cart from the active product (its name and price kept as the
-- line's snapshot). A new line needs room under max_lines. `product_ok` false: unknown or
-- inactive product; `existed`: the line was there; `written` false: nothing was written.
-- A change touches the cart (and a guest cart lives another ttl seconds).
WITH product AS (
    SELECT id, name, price_cents FROM products WHERE id = :product_id AND is_active
),
existing AS (
    SELECT 1 FROM cart_items WHERE cart_id = :cart_id AND product_id = :product_id
),
line AS (
    INSERT INTO cart_items (cart_id, product_id, quantity, name, unit_price_cents)
    SELECT :cart_id, p.id, :quantity, p.name, p.price_cents
      FROM product p
     WHERE EXISTS (SELECT 1 FROM existing)
        OR (SELECT count(*) FROM cart_items WHERE cart_id = :cart_id) < :max_lines
    ON CONFLICT (cart_id, product_id) DO UPDATE
       SET quantity         = EXCLUDED.quantity,
           name             = EXCLUDED.name,
           unit_price_cents = EXCLUDED.unit_price_cents
    RETURNING 1
),
touched AS (
    UPDATE carts
       SET updated_at = now(),
           expires_at = CASE WHEN token_hash IS NOT NULL
                             THEN now() + make_interval(secs => :ttl) END
     WHERE id = :cart_id AND EXISTS (SELECT 1 FROM line)
)
SELECT EXISTS (SELECT 1 FROM product) AS product_ok,
       EXISTS (SELECT 1 FROM existing) AS existed,
       EXISTS (SELECT 1 FROM line) AS written;

-- name: delete_cart_line(cart_id, product_id, ttl)!
-- Removes one line of a locked cart (absent: nothing happens); a removal touches the cart.
WITH gone AS (
    DELETE FROM cart_items WHERE cart_id = :cart_id AND product_id = :product_id RETURNING 1
)
UPDATE carts
   SET updated_at = now(),
       expires_at = CASE WHEN token_hash IS NOT NULL
                         THEN now() + make_interval(secs => :ttl) END
 WHERE id = :cart_id AND EXISTS (SELECT 1 FROM gone);

-- name: clear_cart(cart_id, ttl)!
-- Empties a locked cart; emptying a non-empty one touches it.
WITH gone AS (
    DELETE FROM cart_items WHERE cart_id = :cart_id RETURNING 1
)
UPDATE carts
   SET updated_at = now(),
       expires_at = CASE WHEN token_hash IS NOT NULL
                         THEN now() + make_interval(secs => :ttl) END
 WHERE id = :cart_id AND EXISTS (SELECT 1 FROM gone);

-- name: merge_guest_cart(user_cart_id, guest_cart_id, max_lines)$
-- Claim, both carts locked: the merged cart's line count; when within max_lines, the guest
-- lines join the user's (a product in both keeps the larger quantity, not the sum: the same
-- cart filled on two devices is not doubled; new lines go last, in their guest order) and
-- the guest cart is deleted (its lines cascade). Over max_lines nothing is written.
WITH merged AS (
    SELECT count(DISTINCT product_id) AS lines
      FROM cart_items
     WHERE cart_id IN (:user_cart_id, :guest_cart_id)
),
moved AS (
    INSERT INTO cart_items (cart_id, product_id, quantity, name, unit_price_cents)
    SELECT :user_cart_id, g.product_id, g.quantity, g.name, g.unit_price_cents
      FROM cart_items g
     WHERE g.cart_id = :guest_cart_id AND (SELECT lines FROM merged) <= :max_lines
     ORDER BY g.added
    ON CONFLICT (cart_id, product_id) DO UPDATE
       SET quantity = greatest(cart_items.quantity, EXCLUDED.quantity)
    RETURNING 1
),
guest_gone AS (
    DELETE FROM carts
     WHERE id = :guest_cart_id AND (SELECT lines FROM merged) <= :max_lines
),
touched AS (
    UPDATE carts
       SET updated_at = now()
     WHERE id = :user_cart_id AND EXISTS (SELECT 1 FROM moved)
)
SELECT lines FROM merged;

-- name: delete_expired_guest_carts()!
-- Housekeeping: guest carts past their expiry go (their lines cascade).
DELETE FROM carts
 WHERE token_hash IS NOT NULL AND expires_at <= now();
