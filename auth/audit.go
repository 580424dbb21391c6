package auth

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/core"
)

// maxUserAgentBytes is the most of a User-Agent the audit log keeps.
const maxUserAgentBytes = 512

// LogValue logs every field of an event, so that one the database refused is still on record.
func (e AuditEvent) LogValue() slog.Value {
	user := ""
	if e.UserID != nil {
		user = e.UserID.String()
	}
	return slog.GroupValue(
		slog.String("event", e.Event), slog.String("user_id", user), slog.String("ip", e.IP),
		slog.String("user_agent", e.UserAgent), slog.String("request_id", e.RequestID), slog.String("detail", e.Detail),
	)
}

// audit records a security event. The audit log must not turn a good request into a failure, so when the
// event cannot be stored it is logged whole, at ERROR, rather than returned.
func (s *Service) audit(ctx context.Context, event string, userID *uuid.UUID, client Client, detail string) {
	e := AuditEvent{
		Event: event, UserID: userID, IP: client.IP, UserAgent: cleanUserAgent(client.UserAgent),
		RequestID: client.RequestID, Detail: detail,
	}
	if err := s.store.InsertAuditEvent(context.WithoutCancel(ctx), e); err != nil {
		s.logger.ErrorContext(ctx, "audit event not stored", "audit_event", e, "error", err)
	}
}

// cleanUserAgent makes a User-Agent storable as text: valid UTF-8 (U+FFFD for each invalid byte sequence),
// without NUL, and at most maxUserAgentBytes long, cut at a character boundary.
func cleanUserAgent(ua string) string {
	ua = strings.ReplaceAll(strings.ToValidUTF8(ua, "\uFFFD"), "\x00", "")
	if len(ua) <= maxUserAgentBytes {
		return ua
	}
	cut := maxUserAgentBytes
	for !utf8.RuneStart(ua[cut]) {
		cut--
	}
	return ua[:cut]
}

// AuditPage is one page of a user's security events. Next is the cursor of the following page, or "" on
// the last.
type AuditPage struct {
	Events []AuditEvent
	Next   string
}

// AuditEvents lists a page of at most limit of the user's security events, newest first, starting after
// cursor (an AuditPage.Next of an earlier call) unless it is "".
func (s *Service) AuditEvents(ctx context.Context, userID uuid.UUID, cursor string, limit int) (AuditPage, error) {
	var before int64
	if cursor != "" {
		var err error
		if before, err = core.ParsePositionCursor("cursor", cursor); err != nil {
			return AuditPage{}, err
		}
	}
	// One more than asked tells whether another page exists.
	events, err := s.store.AuditEvents(ctx, userID, before, limit+1)
	if err != nil {
		return AuditPage{}, fmt.Errorf("list audit events: %w", err)
	}
	if len(events) <= limit {
		return AuditPage{Events: events}, nil
	}
	events = events[:limit]
	return AuditPage{Events: events, Next: core.PositionCursor(events[limit-1].ID)}, nil
}
