-- name: CreateRefreshToken :exec
-- A token of a new family (family_started_at NULL: now) or the next token of a family.
INSERT INTO refresh_tokens (family_id, user_id, token_hash, expires_at, family_started_at)
VALUES (@family_id, @user_id, @token_hash, @expires_at, coalesce(sqlc.narg('family_started_at')::timestamptz, now()));

-- name: UseRefreshToken :one
-- Marks a live token used, atomically: a token is usable once, and not once its family is too old.
UPDATE refresh_tokens
SET used_at = now()
WHERE token_hash = @token_hash
  AND used_at IS NULL
  AND revoked_at IS NULL
  AND expires_at > now()
  AND family_started_at > @family_started_after
RETURNING *;

-- name: GetRefreshToken :one
SELECT *
FROM refresh_tokens
WHERE token_hash = @token_hash;

-- name: RevokeRefreshTokenFamily :execrows
UPDATE refresh_tokens
SET revoked_at = now()
WHERE family_id = @family_id
  AND revoked_at IS NULL;
