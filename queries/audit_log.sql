-- name: InsertAuditEvent :exec
INSERT INTO audit_log (event, user_id, ip, user_agent, request_id, detail)
VALUES (@event, sqlc.narg('user_id'), @ip, @user_agent, @request_id, @detail);

-- name: ListAuditEventsByUser :many
-- One page of a user's events, newest first; the cursor is the id of the last row of the previous page.
SELECT *
FROM audit_log
WHERE user_id = @user_id
  AND (sqlc.narg('before_id')::bigint IS NULL OR id < sqlc.narg('before_id')::bigint)
ORDER BY id DESC
LIMIT @page_size;
