-- api_time was declared IMMUTABLE, but its body calls to_char(timestamp, text), which is
-- STABLE. PostgreSQL inlines a SQL function only when the body is no more volatile than the
-- declaration, so it never inlined api_time: every statement that formats a timestamp
-- (product views, order documents, the order placement) ran it through the SQL-function
-- executor, parsing and planning its body again at every execution, once per call site
-- (~18 % of the database CPU of an order placement). STABLE is the honest label and lets the
-- planner put to_char(...) in its place. Nothing needs it IMMUTABLE (no index or generated
-- column uses it).
-- depends: 0011_payments

ALTER FUNCTION api_time(timestamptz) STABLE;
