-- name: CreateConversation :one
INSERT INTO conversations (user_id, title, model)
VALUES (@user_id, @title, @model)
RETURNING *;

-- name: GetConversation :one
SELECT *
FROM conversations
WHERE id = @id
  AND user_id = @user_id;

-- name: ListConversations :many
-- One page, most recently active first; the cursor is the last row of the previous page.
SELECT *
FROM conversations
WHERE user_id = @user_id
  AND (
    sqlc.narg('after_updated_at')::timestamptz IS NULL
    OR (updated_at, id) < (sqlc.narg('after_updated_at')::timestamptz, sqlc.narg('after_id')::uuid)
  )
ORDER BY updated_at DESC, id DESC
LIMIT @page_size;

-- name: UpdateConversationTitle :one
UPDATE conversations
SET title = @title,
    updated_at = now()
WHERE id = @id
  AND user_id = @user_id
RETURNING *;

-- name: TouchConversation :exec
UPDATE conversations
SET updated_at = now()
WHERE id = @id;

-- name: LockConversation :one
-- Locks a conversation of the user until the transaction ends. Messages being added to it are waited for,
-- and new ones wait in turn (their foreign key check conflicts with the lock).
SELECT id
FROM conversations
WHERE id = @id
  AND user_id = @user_id
FOR UPDATE;

-- name: DeleteConversation :exec
-- Deletes a conversation of the user with its messages and no longer counts their content as stored; lock
-- it first (LockConversation), so that no message is added between the count and the delete.
WITH gone AS (
    DELETE FROM conversations AS c
    WHERE c.id = @id
      AND c.user_id = @user_id
    RETURNING c.id
), freed AS (
    SELECT coalesce(sum(octet_length(m.content)), 0)::bigint AS bytes
    FROM messages AS m
    WHERE m.conversation_id IN (SELECT gone.id FROM gone)
)
UPDATE users
SET stored_bytes = users.stored_bytes - freed.bytes
FROM freed, gone
WHERE users.id = @user_id;
