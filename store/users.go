package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/gen/db"
)

// User is an account.
type User struct {
	ID           uuid.UUID
	Email        string
	PasswordHash string
	CreatedAt    time.Time
}

func userFromDB(u db.User) User {
	return User{ID: u.ID, Email: u.Email, PasswordHash: u.PasswordHash, CreatedAt: u.CreatedAt}
}

// CreateUser stores a new account; an email that exists already, in any letter case, is ErrConflict.
func (s *Store) CreateUser(ctx context.Context, email, passwordHash string) (User, error) {
	u, err := s.q.CreateUser(ctx, db.CreateUserParams{Email: email, PasswordHash: passwordHash})
	if err != nil {
		return User{}, fmt.Errorf("create user: %w", interpretError(err))
	}
	return userFromDB(u), nil
}

// UserByEmail finds an account by email, ignoring letter case.
func (s *Store) UserByEmail(ctx context.Context, email string) (User, error) {
	u, err := s.q.GetUserByEmail(ctx, email)
	if err != nil {
		return User{}, fmt.Errorf("get user by email: %w", interpretError(err))
	}
	return userFromDB(u), nil
}

// UserByID finds an account by id.
func (s *Store) UserByID(ctx context.Context, id uuid.UUID) (User, error) {
	u, err := s.q.GetUserByID(ctx, id)
	if err != nil {
		return User{}, fmt.Errorf("get user %s: %w", id, interpretError(err))
	}
	return userFromDB(u), nil
}

// UpdatePasswordHash replaces an account's password hash, as when its hashing parameters change.
func (s *Store) UpdatePasswordHash(ctx context.Context, id uuid.UUID, passwordHash string) error {
	err := s.q.UpdateUserPasswordHash(ctx, db.UpdateUserPasswordHashParams{ID: id, PasswordHash: passwordHash})
	if err != nil {
		return fmt.Errorf("update password hash of user %s: %w", id, interpretError(err))
	}
	return nil
}
