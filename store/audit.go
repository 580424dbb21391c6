package store

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/gen/db"
)

// InsertAuditEvent appends an event to the audit log.
func (s *Store) InsertAuditEvent(ctx context.Context, e auth.AuditEvent) error {
	err := s.q.InsertAuditEvent(ctx, db.InsertAuditEventParams{
		Event: e.Event, UserID: e.UserID, Ip: e.IP, UserAgent: e.UserAgent, RequestID: e.RequestID, Detail: e.Detail,
	})
	if e.UserID != nil {
		s.wrote(*e.UserID)
	}
	if err != nil {
		return fmt.Errorf("insert audit event %s: %w", e.Event, interpretError(err, "audit event"))
	}
	return nil
}

// AuditEvents lists up to limit audit events of a user, newest first, older than the event beforeID when it
// is not zero.
func (s *Store) AuditEvents(ctx context.Context, userID uuid.UUID, beforeID int64, limit int) ([]auth.AuditEvent, error) {
	params := db.ListAuditEventsByUserParams{UserID: &userID, PageSize: int32(limit)}
	if beforeID != 0 {
		params.BeforeID = &beforeID
	}
	rows, err := staleRead(ctx, s, []uuid.UUID{userID}, func(q *db.Queries) ([]db.AuditLog, error) {
		return q.ListAuditEventsByUser(ctx, params)
	})
	if err != nil {
		return nil, fmt.Errorf("list audit events of user %s: %w", userID, interpretError(err, "audit event"))
	}
	events := make([]auth.AuditEvent, len(rows))
	for i, r := range rows {
		events[i] = auth.AuditEvent{
			ID: r.ID, Event: r.Event, UserID: r.UserID, IP: r.Ip, UserAgent: r.UserAgent, RequestID: r.RequestID,
			Detail: r.Detail, CreatedAt: r.CreatedAt,
		}
	}
	return events, nil
}
