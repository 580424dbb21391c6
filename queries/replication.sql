-- name: PrimaryFlushLSN :one
-- How far the primary has flushed its write-ahead log, as a byte position: every transaction committed
-- (with synchronous_commit on, the default) before this query ends at or before it.
SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint AS lsn;

-- name: ReplicaReplayLSN :one
-- How far a streaming replica has replayed the primary's write-ahead log, as a byte position; -1 on a
-- server that is not a replica.
SELECT coalesce((pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint, -1)::bigint AS lsn;
