-- +goose Up
-- A refresh-token family has an absolute lifetime: each rotation copies the start of its family.
ALTER TABLE refresh_tokens ADD COLUMN family_started_at timestamptz NOT NULL DEFAULT now();

UPDATE refresh_tokens AS t
SET family_started_at = f.started_at
FROM (
    SELECT family_id, min(created_at) AS started_at
    FROM refresh_tokens
    GROUP BY family_id
) AS f
WHERE t.family_id = f.family_id;

-- A user's security events, newest first, keyset-paginated by id.
DROP INDEX audit_log_user_id_created_at_idx;
CREATE INDEX audit_log_user_id_id_idx ON audit_log (user_id, id DESC);

-- +goose Down
DROP INDEX audit_log_user_id_id_idx;
CREATE INDEX audit_log_user_id_created_at_idx ON audit_log (user_id, created_at);
ALTER TABLE refresh_tokens DROP COLUMN family_started_at;
