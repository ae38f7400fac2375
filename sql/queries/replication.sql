-- Where the database stands: the session settings a connection got, and WAL positions for
-- read-your-writes on a streaming replica (shopapi/replica.py).

-- name: session_settings()^
-- What a new connection runs under: the startup `options` set these, unless a pooler
-- dropped them (PgBouncer before 1.21 refuses `options`; ignore_startup_parameters drops it):
-- then the role's or database's own settings must carry them.
SELECT (SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout') AS statement_timeout_ms,
       extract(timezone FROM now())::int AS utc_offset_seconds;

-- name: written_wal_position()$
-- On the primary, after a commit: the WAL byte position every commit answered so far lies
-- below (a standby that replayed this far sees them all).
SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS position;

-- name: replica_caught_up(position)$
-- On a standby: has it replayed the WAL up to `position`? A database that replays no WAL
-- (not a standby: a copy kept some other way) has no position to compare: true.
SELECT coalesce(pg_last_wal_replay_lsn() - '0/0'::pg_lsn >= :position, true) AS caught_up;
