-- name: InsertUsageRecords :copyfrom
-- A batch of usage records, in one COPY.
INSERT INTO usage_records (
    user_id, api_key_id, model, upstream, prompt_tokens, completion_tokens, ttft_ms, duration_ms, outcome,
    request_id, created_at
) VALUES (
    @user_id, @api_key_id, @model, @upstream, @prompt_tokens, @completion_tokens, @ttft_ms, @duration_ms,
    @outcome, @request_id, @created_at
);

-- name: UserUsage :many
-- One user's calls between two times, summed by UTC day, model or both (a key not grouped by is NULL or
-- ''): an index-only scan of usage_records_user_id_created_at_idx.
SELECT
    (CASE WHEN @by_day::boolean THEN (created_at AT TIME ZONE 'UTC')::date END)::date AS day,
    (CASE WHEN @by_model::boolean THEN model ELSE '' END)::text AS model,
    (CASE WHEN @by_user::boolean THEN user_id END)::uuid AS user_id,
    count(*) AS requests,
    sum(prompt_tokens)::bigint AS prompt_tokens,
    sum(completion_tokens)::bigint AS completion_tokens
FROM usage_records
WHERE user_id = @user_id
  AND created_at >= @from_time
  AND created_at < @to_time
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;

-- name: AllUsage :many
-- Everybody's calls between two times, summed as UserUsage sums them: an index-only scan of
-- usage_records_created_at_idx.
SELECT
    (CASE WHEN @by_day::boolean THEN (created_at AT TIME ZONE 'UTC')::date END)::date AS day,
    (CASE WHEN @by_model::boolean THEN model ELSE '' END)::text AS model,
    (CASE WHEN @by_user::boolean THEN user_id END)::uuid AS user_id,
    count(*) AS requests,
    sum(prompt_tokens)::bigint AS prompt_tokens,
    sum(completion_tokens)::bigint AS completion_tokens
FROM usage_records
WHERE created_at >= @from_time
  AND created_at < @to_time
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;

-- name: UserTokensUsed :one
-- One user's prompt and completion tokens since the start of a day and since the start of a month (the
-- earlier of the two), to rebuild quota totals: an index-only scan of usage_records_user_id_created_at_idx.
SELECT
    coalesce(sum(prompt_tokens + completion_tokens) FILTER (WHERE created_at >= @day_start), 0)::bigint AS day_tokens,
    coalesce(sum(prompt_tokens + completion_tokens) FILTER (WHERE created_at >= @month_start), 0)::bigint AS month_tokens
FROM usage_records
WHERE user_id = @user_id
  AND created_at >= least(@day_start::timestamptz, @month_start::timestamptz);
