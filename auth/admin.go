package auth

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/core"
)

// Role is what an account may do: every account is a RoleUser, and a RoleAdmin may also use the admin
// routes. Roles change only on the server's machine, with `deepersensor admin`, never through the API.
type Role string

// The roles.
const (
	RoleUser  Role = "user"
	RoleAdmin Role = "admin"
)

// Audit events of roles and admin actions.
const (
	// EventAdminGranted and EventAdminRevoked are recorded for the account whose role `deepersensor admin`
	// changed.
	EventAdminGranted = "admin_granted"
	EventAdminRevoked = "admin_revoked"
	// EventQuotasSet is recorded for the admin who set a user's quotas; its detail names the user and the
	// change.
	EventQuotasSet = "quotas_set"
)

// Quotas are a user's token quotas; nil stands for the default.
type Quotas struct {
	TokensPerDay   *int64
	TokensPerMonth *int64
}

// Usage sums a user's model calls over a period.
type Usage struct {
	Requests         int64
	PromptTokens     int64
	CompletionTokens int64
}

// Account is a user with its role and quotas.
type Account struct {
	User
	Role   Role
	Quotas Quotas
}

// AdminUser is an account as the admin routes show it: with its usage in the current UTC month.
type AdminUser struct {
	Account
	UsageThisMonth Usage
}

// AdminUserPage is one page of accounts. Next is the cursor of the following page, or "" on the last.
type AdminUserPage struct {
	Users []AdminUser
	Next  string
}

// SetRole gives the account with email the role, for `deepersensor admin` on the server's machine: no route
// of the API changes roles. A change is recorded in the account's audit log, naming by, who made it; it
// reports whether the role changed. An unknown email is a core.NotFound.
func SetRole(ctx context.Context, st Store, email string, role Role, by string) (User, bool, error) {
	email, err := trimEmail(email)
	if err != nil {
		return User{}, false, err
	}
	user, before, err := st.SetRoleByEmail(ctx, email, role)
	if err != nil {
		return User{}, false, fmt.Errorf("set the role of %s: %w", email, err)
	}
	if before == role {
		return user, false, nil
	}
	event := EventAdminGranted
	if role != RoleAdmin {
		event = EventAdminRevoked
	}
	e := AuditEvent{Event: event, UserID: &user.ID, Detail: fmt.Sprintf("role %s -> %s by %s", before, role, by)}
	if err := st.InsertAuditEvent(ctx, e); err != nil {
		return user, true, fmt.Errorf("the role of %s changed, but the audit event was not stored: %w", email, err)
	}
	return user, true, nil
}

// IsAdmin reports whether a user is an admin. It reads the role from the database on every call, so that a
// revoke holds from the next request on, on every instance, as a role in the access token or a cache would
// not; only the admin routes, which are rare, ask.
func (s *Service) IsAdmin(ctx context.Context, id uuid.UUID) (bool, error) {
	role, err := s.store.UserRole(ctx, id)
	switch {
	case core.ErrorCode(err) == core.NotFound:
		return false, nil // deleted meanwhile
	case err != nil:
		return false, fmt.Errorf("read the role of user %s: %w", id, err)
	}
	return role == RoleAdmin, nil
}

// Users lists a page of at most limit accounts in the order of their emails, ignoring letter case, with
// their usage this month, starting after cursor (an AdminUserPage.Next of an earlier call) unless it is "".
func (s *Service) Users(ctx context.Context, cursor string, limit int) (AdminUserPage, error) {
	var after string
	if cursor != "" {
		var err error
		if after, err = core.ParseTextCursor("cursor", cursor); err != nil {
			return AdminUserPage{}, err
		}
	}
	// One more than asked tells whether another page exists.
	accounts, err := s.store.Accounts(ctx, after, limit+1)
	if err != nil {
		return AdminUserPage{}, fmt.Errorf("list accounts: %w", err)
	}
	var next string
	if len(accounts) > limit {
		accounts = accounts[:limit]
		next = core.TextCursor(accounts[limit-1].Email)
	}
	users, err := s.withUsage(ctx, accounts)
	if err != nil {
		return AdminUserPage{}, err
	}
	return AdminUserPage{Users: users, Next: next}, nil
}

// SetQuotas sets the token quotas of the user id, as the admin adminID asked from client, and records it in
// the admin's audit log, naming the user and the change. An unknown user is a core.NotFound.
func (s *Service) SetQuotas(ctx context.Context, adminID, id uuid.UUID, q Quotas, client Client) (AdminUser, error) {
	for _, f := range []struct {
		name  string
		quota *int64
	}{{"tokens_per_day", q.TokensPerDay}, {"tokens_per_month", q.TokensPerMonth}} {
		if f.quota != nil && *f.quota < 0 {
			return AdminUser{}, core.InvalidField(f.name, "must be 0 or more, or null for the default")
		}
	}
	account, before, err := s.store.SetQuotas(ctx, id, q)
	if err != nil {
		return AdminUser{}, fmt.Errorf("set the quotas of user %s: %w", id, err)
	}
	s.audit(ctx, EventQuotasSet, &adminID, client, fmt.Sprintf("user %s (%s): tokens_per_day %s -> %s, tokens_per_month %s -> %s",
		id, account.Email, quotaText(before.TokensPerDay), quotaText(q.TokensPerDay),
		quotaText(before.TokensPerMonth), quotaText(q.TokensPerMonth)))
	users, err := s.withUsage(ctx, []Account{account})
	if err != nil {
		return AdminUser{}, err
	}
	return users[0], nil
}

// quotaText writes a quota for the audit log.
func quotaText(quota *int64) string {
	if quota == nil {
		return "default"
	}
	return strconv.FormatInt(*quota, 10)
}

// withUsage adds to each account its usage in the current UTC month.
func (s *Service) withUsage(ctx context.Context, accounts []Account) ([]AdminUser, error) {
	ids := make([]uuid.UUID, len(accounts))
	for i, a := range accounts {
		ids[i] = a.ID
	}
	now := s.now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	usage, err := s.store.UsageByUser(ctx, ids, month, month.AddDate(0, 1, 0))
	if err != nil {
		return nil, fmt.Errorf("sum the usage of %d users: %w", len(ids), err)
	}
	users := make([]AdminUser, len(accounts))
	for i, a := range accounts {
		users[i] = AdminUser{Account: a, UsageThisMonth: usage[a.ID]}
	}
	return users, nil
}
