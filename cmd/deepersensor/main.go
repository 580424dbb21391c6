// Command deepersensor runs the DeeperSensor API server: it reads the configuration, opens the database,
// applies the migrations, serves the API until SIGINT or SIGTERM, and then shuts down gracefully.
//
// `deepersensor healthcheck` asks a running server's /healthz and exits 0 when it answers 200; container
// health checks use it, since the image has no shell or curl.
//
// `deepersensor admin grant EMAIL` makes the account with EMAIL an admin, and `deepersensor admin revoke
// EMAIL` an ordinary user again, in the database of DS_DATABASE_URL: roles change only on the server's
// machine, never through the API.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/deepersensor/deepersensor/app"
	"github.com/deepersensor/deepersensor/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usage is the command line's help.
const usage = `usage: deepersensor                      serve the API
       deepersensor healthcheck          ask the running server's /healthz
       deepersensor admin grant EMAIL    make the account with EMAIL an admin
       deepersensor admin revoke EMAIL   make the account with EMAIL an ordinary user again
`

// run runs the command that args name and returns its exit code: 0 when it succeeded, 1 when it failed, 2
// for a bad command line or configuration.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		return serve(ctx, stdout, stderr)
	case args[0] == "healthcheck" && len(args) == 1:
		if err := healthcheck(ctx); err != nil {
			fmt.Fprintln(stderr, "healthcheck:", err)
			return 1
		}
		return 0
	case args[0] == "admin":
		return admin(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return 2
}

// serve serves the API until ctx ends.
func serve(ctx context.Context, stdout, stderr io.Writer) int {
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	logger := newLogger(cfg, stdout)
	if err := app.Run(ctx, cfg, logger); err != nil {
		logger.Error("server stopped", "error", err)
		return 1
	}
	return 0
}

// newLogger logs to w, JSON in production and text in development, at the configured level.
func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.SlogLevel()}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// healthcheck asks the server at DS_HTTP_ADDR for /healthz.
func healthcheck(ctx context.Context) error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("DS_HTTP_ADDR %q: %w", cfg.HTTPAddr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz answered %s", resp.Status)
	}
	return nil
}
