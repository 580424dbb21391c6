-- name: CreateMessage :one
INSERT INTO messages (id, conversation_id, role, content, status, model, done_reason, prompt_tokens, completion_tokens)
VALUES (@id, @conversation_id, @role, @content, @status, @model, @done_reason, sqlc.narg('prompt_tokens'), sqlc.narg('completion_tokens'))
RETURNING *;

-- name: ListMessagePage :many
-- A page of a conversation's messages, newest first: those before @before_seq (all when it is NULL), at most
-- @page_size of them and no more content than @max_bytes, though always the first (whose running total is
-- its own size). has_older tells whether messages older than each row exist.
SELECT page.id, page.seq, page.conversation_id, page.role, page.content, page.status, page.model, page.done_reason,
    page.prompt_tokens, page.completion_tokens, page.created_at,
    EXISTS (
        SELECT 1
        FROM messages AS older
        WHERE older.conversation_id = page.conversation_id
          AND older.seq < page.seq
    ) AS has_older
FROM (
    SELECT m.*,
        sum(octet_length(m.content)) OVER (ORDER BY m.seq DESC) AS running_bytes
    FROM messages AS m
    WHERE m.conversation_id = @conversation_id
      AND (sqlc.narg('before_seq')::bigint IS NULL OR m.seq < sqlc.narg('before_seq')::bigint)
    ORDER BY m.seq DESC
    LIMIT @page_size
) AS page
WHERE page.running_bytes <= @max_bytes::bigint
   OR page.running_bytes = octet_length(page.content)
ORDER BY page.seq DESC;

-- name: ReserveStoredBytes :execrows
-- Counts @bytes more of stored content for the user, unless that would pass @max_bytes.
UPDATE users
SET stored_bytes = stored_bytes + @bytes
WHERE id = @user_id
  AND stored_bytes + @bytes <= @max_bytes;

-- name: AddStoredBytes :exec
-- Counts @bytes more of stored content for the user, whatever the cap: an answer is never lost.
UPDATE users
SET stored_bytes = stored_bytes + @bytes
WHERE id = @user_id;
