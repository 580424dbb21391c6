-- name: AppendMessages :many
-- Stores messages at the end of a conversation, marks it active and counts their @bytes of content as stored
-- by the user, in one statement (one round trip, one commit), and returns their ids, places and times in
-- order (not their content, which the caller has); unless @max_bytes is above zero and the count would pass
-- it, or the user does not exist: then nothing is stored and no row is returned. A conversation that no
-- longer exists fails the messages' foreign key, which undoes the count. The messages are the arrays, one
-- element per message in order; a token count of -1 is stored as NULL (no usage reported).
WITH counted AS (
    UPDATE users
    SET stored_bytes = stored_bytes + @bytes::bigint
    WHERE id = @user_id::uuid
      AND (@max_bytes::bigint <= 0 OR stored_bytes + @bytes::bigint <= @max_bytes::bigint)
    RETURNING id
), touched AS (
    UPDATE conversations
    SET updated_at = now()
    WHERE id = @conversation_id::uuid
      AND EXISTS (SELECT 1 FROM counted)
), stored AS (
    INSERT INTO messages (id, conversation_id, role, content, status, model, done_reason, prompt_tokens, completion_tokens)
    SELECT (@ids::uuid[])[i], @conversation_id::uuid, (@roles::text[])[i], (@contents::text[])[i], (@statuses::text[])[i],
        (@models::text[])[i], (@done_reasons::text[])[i], nullif((@prompt_tokens::integer[])[i], -1),
        nullif((@completion_tokens::integer[])[i], -1)
    FROM counted,
        generate_subscripts(@ids::uuid[], 1) AS i
    ORDER BY i
    RETURNING id, seq, created_at
)
SELECT stored.id, stored.seq, stored.created_at
FROM stored
ORDER BY stored.seq;

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
