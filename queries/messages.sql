-- name: CreateMessage :one
INSERT INTO messages (id, conversation_id, role, content, status, model, done_reason, prompt_tokens, completion_tokens)
VALUES (@id, @conversation_id, @role, @content, @status, @model, @done_reason, sqlc.narg('prompt_tokens'), sqlc.narg('completion_tokens'))
RETURNING *;

-- name: ListMessages :many
SELECT *
FROM messages
WHERE conversation_id = @conversation_id
ORDER BY seq;

-- name: ListRecentMessages :many
-- The newest messages of a conversation, returned oldest first.
SELECT *
FROM (
    SELECT *
    FROM messages
    WHERE conversation_id = @conversation_id
    ORDER BY seq DESC
    LIMIT @max_messages
) AS recent
ORDER BY seq;
