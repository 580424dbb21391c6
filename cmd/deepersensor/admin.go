package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/store"
)

// admin runs `deepersensor admin grant|revoke EMAIL`: it migrates the database of DS_DATABASE_URL, as the
// server does at start, and gives the account with EMAIL the admin role or takes it away. Doing what is
// done already succeeds; an unknown email fails.
func admin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 || (args[0] != "grant" && args[0] != "revoke") {
		fmt.Fprint(stderr, usage)
		return 2
	}
	role := auth.RoleAdmin
	if args[0] == "revoke" {
		role = auth.RoleUser
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if err := setRole(ctx, cfg, args[1], role, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "deepersensor admin:", err)
		return 1
	}
	return 0
}

// setRole gives the account with email the role and says what it did on stdout; the migrations log on
// stderr.
func setRole(ctx context.Context, cfg config.Config, email string, role auth.Role, stdout, stderr io.Writer) error {
	pool, err := store.Open(ctx, cfg.DatabaseURL, nil)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool, newLogger(cfg, stderr)); err != nil {
		return err
	}
	u, changed, err := auth.SetRole(ctx, store.New(pool), email, role, operator())
	if core.ErrorCode(err) == core.NotFound {
		return fmt.Errorf("no account has the email %q", email)
	}
	if err != nil {
		return err
	}
	switch {
	case role == auth.RoleAdmin && changed:
		fmt.Fprintf(stdout, "%s (%s) is an admin now\n", u.Email, u.ID)
	case role == auth.RoleAdmin:
		fmt.Fprintf(stdout, "%s (%s) is an admin already\n", u.Email, u.ID)
	case changed:
		fmt.Fprintf(stdout, "%s (%s) is no longer an admin\n", u.Email, u.ID)
	default:
		fmt.Fprintf(stdout, "%s (%s) is not an admin\n", u.Email, u.ID)
	}
	return nil
}

// operator names who runs the command, and where, for the audit log.
func operator() string {
	name := "uid " + strconv.Itoa(os.Getuid())
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return "deepersensor admin, run by " + name + " on " + host
}
