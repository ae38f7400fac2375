-- Shipping methods: what a method costs, where it ships, whether orders still use it.
-- `countries` arrive de-duplicated and sorted from the service; empty ships everywhere.

-- name: insert_shipping_method(name, price_cents, free_over_cents, countries, is_active)^
-- A new method; a name clash in any case raises unique_violation (shipping_methods_name_key).
INSERT INTO shipping_methods (name, price_cents, free_over_cents, countries, is_active)
     VALUES (:name, :price_cents, :free_over_cents, :countries::text[], :is_active)
  RETURNING id, name, price_cents, free_over_cents, countries, is_active,
            api_time(created_at) AS created_at, api_time(updated_at) AS updated_at;

-- name: get_shipping_method(id)^
-- One method by id, active or not (the service decides who may see an inactive one).
SELECT id, name, price_cents, free_over_cents, countries, is_active,
       api_time(created_at) AS created_at, api_time(updated_at) AS updated_at
  FROM shipping_methods
 WHERE id = :id;

-- name: list_shipping_methods(include_inactive, limit, offset)
-- A page by id; the total rides on every row (count_shipping_methods past the end).
SELECT id, name, price_cents, free_over_cents, countries, is_active,
       api_time(created_at) AS created_at, api_time(updated_at) AS updated_at,
       count(*) OVER () AS total
  FROM shipping_methods
 WHERE is_active OR :include_inactive::boolean
 ORDER BY id
 LIMIT :limit OFFSET :offset;

-- name: count_shipping_methods(include_inactive)$
-- Total for a page past the end (where no row carries the window count).
SELECT count(*)
  FROM shipping_methods
 WHERE is_active OR :include_inactive::boolean;

-- name: update_shipping_method(id, name, price_cents, set_free_over, free_over_cents, countries, is_active)^
-- Partial update: a NULL parameter keeps the column; free_over_cents may be set to NULL on
-- purpose (set_free_over). A rename onto a taken name raises unique_violation.
UPDATE shipping_methods
   SET name            = coalesce(:name, name),
       price_cents     = coalesce(:price_cents, price_cents),
       free_over_cents = CASE WHEN :set_free_over::boolean THEN :free_over_cents::bigint
                              ELSE free_over_cents END,
       countries       = coalesce(:countries::text[], countries),
       is_active       = coalesce(:is_active, is_active),
       updated_at      = now()
 WHERE id = :id
 RETURNING id, name, price_cents, free_over_cents, countries, is_active,
           api_time(created_at) AS created_at, api_time(updated_at) AS updated_at;

-- name: shipping_method_in_orders(id)$
-- A method any order used (whatever its status) is deactivated instead of deleted, so the
-- order keeps its reference (orders_shipping_method_idx).
SELECT EXISTS (SELECT 1 FROM orders WHERE shipping_method_id = :id);

-- name: deactivate_shipping_method(id)!
-- DELETE of a method an order used: it is no longer offered, its row stays.
UPDATE shipping_methods
   SET is_active = false,
       updated_at = now()
 WHERE id = :id;

-- name: delete_shipping_method(id)!
-- Removes a method no order used. orders.shipping_method_id is ON DELETE RESTRICT: an order
-- that used it and committed since the check above makes this raise foreign_key_violation.
DELETE FROM shipping_methods WHERE id = :id;
