package auth

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/core"
)

// DeleteAccount deletes a user's account once the password is confirmed: the account, its sessions, API
// keys, conversations and messages. Its audit events stay without the user id, and an account_deleted event is
// added. Every access token and API key of the account ends at once, on every instance.
func (s *Service) DeleteAccount(ctx context.Context, userID uuid.UUID, password string, client Client) error {
	creds, err := s.store.CredentialsByID(ctx, userID)
	if core.ErrorCode(err) == core.NotFound {
		return fmt.Errorf("delete account: %w", ErrInvalidToken)
	}
	if err != nil {
		return fmt.Errorf("delete account: %w", err)
	}
	match, _, err := s.hasher.Verify(ctx, password, creds.PasswordHash)
	if err != nil {
		return fmt.Errorf("delete account: %w", err)
	}
	if !match {
		s.logger.WarnContext(ctx, "account deletion refused: wrong password", "user_id", userID, "ip", client.IP, "request_id", client.RequestID)
		s.audit(ctx, EventAccountDeletionFailure, &userID, client, "wrong password")
		return ErrInvalidCredentials
	}
	if err := s.store.DeleteUser(ctx, userID); err != nil {
		return fmt.Errorf("delete account: %w", err)
	}
	s.revocations.RevokeUser(ctx, userID)
	s.logger.InfoContext(ctx, "account deleted", "user_id", userID, "request_id", client.RequestID)
	s.audit(ctx, EventAccountDeleted, nil, client, "")
	return nil
}
