-- Operations.

-- name: ping()$
-- Readiness probe: the cheapest statement that proves the database answers.
SELECT 1;
