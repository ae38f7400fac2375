ALTER FUNCTION api_time(timestamptz) IMMUTABLE;
