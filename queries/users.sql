-- name: CreateUser :one
INSERT INTO users (email, password_hash)
VALUES (@email, @password_hash)
RETURNING *;

-- name: GetUserByEmail :one
SELECT *
FROM users
WHERE lower(email) = lower(@email);

-- name: GetUserByID :one
SELECT *
FROM users
WHERE id = @id;

-- name: UpdateUserPasswordHash :exec
UPDATE users
SET password_hash = @password_hash,
    updated_at = now()
WHERE id = @id;

-- name: DeleteUser :execrows
-- Deletes an account; its refresh tokens, conversations and messages go with it, and its audit events
-- stay with user_id cleared (foreign keys ON DELETE CASCADE and SET NULL).
DELETE FROM users
WHERE id = @id;
