package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/gen/db"
)

// AuditEvent is one security event: who did what, from where.
type AuditEvent struct {
	Event     string
	UserID    *uuid.UUID
	IP        string
	UserAgent string
	RequestID string
	Detail    string
	CreatedAt time.Time
}

// InsertAuditEvent appends an event to the audit log.
func (s *Store) InsertAuditEvent(ctx context.Context, e AuditEvent) error {
	err := s.q.InsertAuditEvent(ctx, db.InsertAuditEventParams{
		Event: e.Event, UserID: e.UserID, Ip: e.IP, UserAgent: e.UserAgent, RequestID: e.RequestID, Detail: e.Detail,
	})
	if err != nil {
		return fmt.Errorf("insert audit event %s: %w", e.Event, interpretError(err))
	}
	return nil
}

// AuditEventsByUser lists a user's audit events, oldest first.
func (s *Store) AuditEventsByUser(ctx context.Context, userID uuid.UUID) ([]AuditEvent, error) {
	rows, err := s.q.ListAuditEventsByUser(ctx, &userID)
	if err != nil {
		return nil, fmt.Errorf("list audit events of user %s: %w", userID, interpretError(err))
	}
	events := make([]AuditEvent, len(rows))
	for i, r := range rows {
		events[i] = AuditEvent{
			Event: r.Event, UserID: r.UserID, IP: r.Ip, UserAgent: r.UserAgent, RequestID: r.RequestID,
			Detail: r.Detail, CreatedAt: r.CreatedAt,
		}
	}
	return events, nil
}
