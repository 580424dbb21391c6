package store

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/db"
)

func userFromDB(u db.User) auth.User {
	return auth.User{ID: u.ID, Email: u.Email, CreatedAt: u.CreatedAt}
}

// CreateUser stores a new account; an email that exists already, in any letter case, is a core.Conflict.
func (s *Store) CreateUser(ctx context.Context, email, passwordHash string) (auth.User, error) {
	u, err := s.q.CreateUser(ctx, db.CreateUserParams{Email: email, PasswordHash: passwordHash})
	if err != nil {
		return auth.User{}, fmt.Errorf("create user: %w", interpretError(err, "user"))
	}
	return userFromDB(u), nil
}

// CredentialsByEmail finds an account with its password hash by email, ignoring letter case.
func (s *Store) CredentialsByEmail(ctx context.Context, email string) (auth.Credentials, error) {
	u, err := s.q.GetUserByEmail(ctx, email)
	if err != nil {
		return auth.Credentials{}, fmt.Errorf("get user by email: %w", interpretError(err, "user"))
	}
	return auth.Credentials{User: userFromDB(u), PasswordHash: u.PasswordHash}, nil
}

// CredentialsByID finds an account with its password hash by id.
func (s *Store) CredentialsByID(ctx context.Context, id uuid.UUID) (auth.Credentials, error) {
	u, err := s.q.GetUserByID(ctx, id)
	if err != nil {
		return auth.Credentials{}, fmt.Errorf("get user %s: %w", id, interpretError(err, "user"))
	}
	return auth.Credentials{User: userFromDB(u), PasswordHash: u.PasswordHash}, nil
}

// UserByID finds an account by id.
func (s *Store) UserByID(ctx context.Context, id uuid.UUID) (auth.User, error) {
	c, err := s.CredentialsByID(ctx, id)
	return c.User, err
}

// UpdatePasswordHash replaces an account's password hash, as when its hashing parameters change.
func (s *Store) UpdatePasswordHash(ctx context.Context, id uuid.UUID, passwordHash string) error {
	err := s.q.UpdateUserPasswordHash(ctx, db.UpdateUserPasswordHashParams{ID: id, PasswordHash: passwordHash})
	if err != nil {
		return fmt.Errorf("update password hash of user %s: %w", id, interpretError(err, "user"))
	}
	return nil
}

// DeleteUser deletes an account. Its refresh tokens, conversations and messages go with it; its audit events
// stay with the user id cleared. A missing account is a core.NotFound.
func (s *Store) DeleteUser(ctx context.Context, id uuid.UUID) error {
	n, err := s.q.DeleteUser(ctx, id)
	if err != nil {
		return fmt.Errorf("delete user %s: %w", id, interpretError(err, "user"))
	}
	if n == 0 {
		return fmt.Errorf("delete user %s: %w", id, core.Errorf(core.NotFound, "user not found"))
	}
	return nil
}
