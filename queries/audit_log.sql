-- name: InsertAuditEvent :exec
INSERT INTO audit_log (event, user_id, ip, user_agent, request_id, detail)
VALUES (@event, sqlc.narg('user_id'), @ip, @user_agent, @request_id, @detail);

-- name: ListAuditEventsByUser :many
SELECT *
FROM audit_log
WHERE user_id = @user_id
ORDER BY id;
