-- name: CreateConversation :one
-- Creates a conversation of the user with its first messages and counts their @bytes of content as stored by
-- the user, in one statement (one round trip, one commit); unless @max_bytes is above zero and the count
-- would pass it, or the user does not exist: then nothing is stored and no row is returned. The messages
-- are the arrays, one element per message in order, as in AppendMessages.
WITH counted AS (
    UPDATE users
    SET stored_bytes = stored_bytes + @bytes::bigint
    WHERE id = @user_id::uuid
      AND (@max_bytes::bigint <= 0 OR stored_bytes + @bytes::bigint <= @max_bytes::bigint)
    RETURNING id
), conversation AS (
    INSERT INTO conversations (user_id, title, model)
    SELECT counted.id, @title::text, @model::text
    FROM counted
    RETURNING *
), stored AS (
    INSERT INTO messages (id, conversation_id, role, content, status, model, done_reason, prompt_tokens, completion_tokens)
    SELECT (@ids::uuid[])[i], conversation.id, (@roles::text[])[i], (@contents::text[])[i], (@statuses::text[])[i],
        (@models::text[])[i], (@done_reasons::text[])[i], nullif((@prompt_tokens::integer[])[i], -1),
        nullif((@completion_tokens::integer[])[i], -1)
    FROM conversation,
        generate_subscripts(@ids::uuid[], 1) AS i
    ORDER BY i
)
SELECT conversation.id, conversation.user_id, conversation.title, conversation.model, conversation.created_at,
    conversation.updated_at
FROM conversation;

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
