-- +goose Up
-- API keys: long-lived bearer secrets of a user, for tools that cannot log in. Only the SHA-256 of a secret
-- is stored (it is 256 random bits, so a fast hash is enough); prefix, its first characters, is safe to show.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    prefix       text        NOT NULL,
    secret_hash  bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz
);

CREATE INDEX api_keys_user_id_idx ON api_keys (user_id, created_at DESC);

-- +goose Down
DROP TABLE api_keys;
