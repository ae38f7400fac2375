DROP TABLE account_tokens;
ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_family_fkey;
DROP TABLE sessions;
ALTER TABLE users DROP COLUMN token_generation, DROP COLUMN email_verified;
