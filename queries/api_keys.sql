-- name: LockUserForAPIKeys :one
-- Serializes the creation of a user's keys, so that two at once cannot both pass the limit.
SELECT id
FROM users
WHERE id = @id
FOR NO KEY UPDATE;

-- name: CountLiveAPIKeys :one
SELECT count(*)
FROM api_keys
WHERE user_id = @user_id
  AND (expires_at IS NULL OR expires_at > now());

-- name: CreateAPIKey :one
INSERT INTO api_keys (user_id, name, prefix, secret_hash, expires_at)
VALUES (@user_id, @name, @prefix, @secret_hash, sqlc.narg('expires_at'))
RETURNING *;

-- name: ListAPIKeys :many
SELECT *
FROM api_keys
WHERE user_id = @user_id
ORDER BY created_at DESC, id;

-- name: GetAPIKeyByHash :one
SELECT *
FROM api_keys
WHERE secret_hash = @secret_hash;

-- name: DeleteAPIKey :one
DELETE FROM api_keys
WHERE id = @id
  AND user_id = @user_id
RETURNING *;

-- name: TouchAPIKeys :exec
-- Records the last use of many keys in one statement; a time older than the stored one changes nothing.
UPDATE api_keys AS k
SET last_used_at = u.used_at
FROM (
    SELECT unnest(@ids::uuid[]) AS id, unnest(@used_at::timestamptz[]) AS used_at
) AS u
WHERE k.id = u.id
  AND (k.last_used_at IS NULL OR k.last_used_at < u.used_at);
