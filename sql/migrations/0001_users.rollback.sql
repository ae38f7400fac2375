DROP TABLE refresh_tokens;
DROP TABLE users;
DROP FUNCTION api_time(timestamptz);
