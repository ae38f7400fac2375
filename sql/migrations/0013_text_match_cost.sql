-- The ranked search picks its newest SEARCH_CANDIDATES matches one of two ways: read every
-- match from the GIN index and sort them, or walk products_created_idx from the newest
-- product and test each row with @@ until it has enough. Which is cheaper depends on how
-- common the word is, and PostgreSQL prices @@ (ts_match_vq) at 1, as cheap as an integer
-- comparison, where a real test of a product's tsvector costs about a hundred of those: it
-- walked ~3,000 rows for a word in 10 % of 10k products (1.6 ms) instead of reading its 1,000
-- matches (0.9 ms). At 100 it walks only where walking is cheaper (a word in 5 % of 100k or
-- in every product) and reads the matches otherwise (docs/query-plans.md).
--
-- pg_proc is per database: this changes the plan costs of this database alone. Only the
-- function's owner (a superuser) may change it; a migration run by another role (a managed
-- database's admin, say) leaves the cost at 1 with a warning: search still answers, some
-- words cost up to twice as much. pg_dump does not carry it: apply this again after a restore
-- (`yoyo reapply`, or the ALTER below as a superuser).
-- depends: 0012_api_time_inlined

DO $$
BEGIN
    ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) COST 100;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'ts_match_vq keeps its cost of 1 (% is not its owner): ranked searches of '
                  'common words may walk the catalog where reading the index is cheaper',
                  current_user;
END
$$;
