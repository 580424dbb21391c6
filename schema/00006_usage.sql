-- +goose Up
-- One record per model call, whatever the route, written in batches off the request path. Records outlive
-- the account they belong to (no foreign key): they are the accounting.
CREATE TABLE usage_records (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           uuid        NOT NULL,
    api_key_id        uuid,
    model             text        NOT NULL,
    upstream          text        NOT NULL DEFAULT '',
    prompt_tokens     integer     NOT NULL,
    completion_tokens integer     NOT NULL,
    ttft_ms           integer,
    duration_ms       integer     NOT NULL,
    outcome           text        NOT NULL CHECK (outcome IN ('complete', 'incomplete', 'error')),
    request_id        text        NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL
);

-- The reports read only these columns, so both are index-only scans: one user's calls, and everybody's.
CREATE INDEX usage_records_user_id_created_at_idx ON usage_records (user_id, created_at)
    INCLUDE (model, prompt_tokens, completion_tokens);
CREATE INDEX usage_records_created_at_idx ON usage_records (created_at)
    INCLUDE (user_id, model, prompt_tokens, completion_tokens);

-- Admins are made on the server's machine (`deepersensor admin grant EMAIL`); quotas NULL mean the defaults.
ALTER TABLE users
    ADD COLUMN role text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    ADD COLUMN tokens_per_day bigint CHECK (tokens_per_day >= 0),
    ADD COLUMN tokens_per_month bigint CHECK (tokens_per_month >= 0);

-- +goose Down
ALTER TABLE users DROP COLUMN role, DROP COLUMN tokens_per_day, DROP COLUMN tokens_per_month;
DROP TABLE usage_records;
