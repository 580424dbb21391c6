-- name: CreateRefreshToken :exec
INSERT INTO refresh_tokens (family_id, user_id, token_hash, expires_at)
VALUES (@family_id, @user_id, @token_hash, @expires_at);

-- name: UseRefreshToken :one
-- Marks a live token used, atomically: a token is usable once.
UPDATE refresh_tokens
SET used_at = now()
WHERE token_hash = @token_hash
  AND used_at IS NULL
  AND revoked_at IS NULL
  AND expires_at > now()
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
