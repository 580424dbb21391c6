-- +goose Up
CREATE TABLE conversations (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title      text        NOT NULL,
    model      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Keyset pagination: a user's conversations, most recently active first.
CREATE INDEX conversations_user_id_updated_at_id_idx ON conversations (user_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    seq               bigint      NOT NULL GENERATED ALWAYS AS IDENTITY,
    conversation_id   uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              text        NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content           text        NOT NULL,
    status            text        NOT NULL CHECK (status IN ('complete', 'incomplete')),
    model             text        NOT NULL DEFAULT '',
    done_reason       text        NOT NULL DEFAULT '',
    prompt_tokens     integer,
    completion_tokens integer,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- A conversation's messages in the order they were stored.
CREATE INDEX messages_conversation_id_seq_idx ON messages (conversation_id, seq);

-- +goose Down
DROP TABLE messages;
DROP TABLE conversations;
