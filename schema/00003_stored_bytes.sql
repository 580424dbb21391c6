-- +goose Up
-- The bytes of message content each user stores, kept in step with messages by the store, so that a chat
-- that would pass the per-user cap is refused before anything is stored.
ALTER TABLE users ADD COLUMN stored_bytes bigint NOT NULL DEFAULT 0;

UPDATE users AS u
SET stored_bytes = (
    SELECT coalesce(sum(octet_length(m.content)), 0)
    FROM messages AS m
    JOIN conversations AS c ON c.id = m.conversation_id
    WHERE c.user_id = u.id
);

-- +goose Down
ALTER TABLE users DROP COLUMN stored_bytes;
