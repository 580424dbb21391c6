-- name: GetUserRole :one
SELECT role
FROM users
WHERE id = @id;

-- name: SetUserRoleByEmail :one
-- Sets the role of the account with this email, ignoring letter case, and returns the account with the
-- role it had before.
WITH old AS (
    SELECT o.id, o.role
    FROM users AS o
    WHERE lower(o.email) = lower(@email)
    FOR UPDATE
)
UPDATE users AS u
SET role = @role,
    updated_at = now()
FROM old
WHERE u.id = old.id
RETURNING u.id, u.email, u.created_at, old.role AS previous_role;

-- name: ListUsersByEmail :many
-- One page of accounts in the order of their lower-cased emails, a range scan of the unique index on
-- lower(email): those after the email of the last row of the previous page ('' for the first page).
SELECT id, email, role, created_at, tokens_per_day, tokens_per_month
FROM users
WHERE lower(email) > lower(@after_email::text)
ORDER BY lower(email)
LIMIT @page_size;

-- name: SetUserQuotas :one
-- Sets a user's token quotas (NULL: the default) and returns the user with the quotas it had before.
WITH old AS (
    SELECT o.id, o.tokens_per_day, o.tokens_per_month
    FROM users AS o
    WHERE o.id = @id
    FOR UPDATE
)
UPDATE users AS u
SET tokens_per_day = sqlc.narg('tokens_per_day'),
    tokens_per_month = sqlc.narg('tokens_per_month'),
    updated_at = now()
FROM old
WHERE u.id = old.id
RETURNING u.id, u.email, u.role, u.created_at, u.tokens_per_day, u.tokens_per_month,
    old.tokens_per_day AS previous_tokens_per_day, old.tokens_per_month AS previous_tokens_per_month;

-- name: SumUsageByUser :many
-- The model calls of some users since a time and before another, and their tokens: index-only scans of
-- usage_records_user_id_created_at_idx. Users without calls have no row.
SELECT user_id,
       count(*) AS requests,
       coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens
FROM usage_records
WHERE user_id = ANY(@user_ids::uuid[])
  AND created_at >= @since
  AND created_at < @until
GROUP BY user_id;

-- name: GetUserQuotas :one
-- A user's own token quotas (NULL: the default).
SELECT tokens_per_day, tokens_per_month
FROM users
WHERE id = @id;
