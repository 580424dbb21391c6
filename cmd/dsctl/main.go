// Command dsctl is the command-line client of a DeeperSensor server: log in, list models, chat with
// streamed answers, and manage stored conversations and API keys. It is built on the sdk package.
//
// Usage:
//
//	dsctl [--server URL] [--json] COMMAND [flags] [args]
//
// Run dsctl help for the commands.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/deepersensor/deepersensor/sdk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// defaultServer is used when neither --server nor DS_SERVER is set.
const defaultServer = "http://127.0.0.1:8080"

const usage = `dsctl is the command-line client of a DeeperSensor server.

Usage:
  dsctl [--server URL] [--json] COMMAND [flags] [args]

Commands:
  signup [-email EMAIL]                  create an account (the password is read from the terminal or stdin)
  login [-email EMAIL]                   log in and keep the session in the user's config directory
  logout                                 end the session
  models                                 list the models
  chat -m MODEL [-c ID] PROMPT...        chat, printing the answer as it streams (PROMPT "" or none: read stdin)
  chat -m MODEL [-c ID] -i               chat interactively: each line of stdin is a turn of one conversation
  conversations list [-limit N] [-cursor C]
  conversations show ID
  conversations rm ID
  keys create [-expires DURATION|TIME] NAME
                                         create an API key; its secret is printed once, alone on stdout
  keys list                              list your API keys
  keys rm ID                             revoke an API key

Global flags (also accepted after the command):
  --server URL   the server (default $DS_SERVER, else ` + defaultServer + `)
  --json         print machine-readable JSON instead of text

With DS_API_KEY set to an API key, every command but signup and login uses it instead of the saved session.
`

// cli is one run of the command: its streams, environment and global flags.
type cli struct {
	stdin          *bufio.Reader
	stdinFile      *os.File // stdin when it is a file, for reading passwords without echo
	stdout, stderr io.Writer
	getenv         func(string) string
	server         string
	json           bool
}

// usageError is a mistake in the command line; it exits with status 2.
type usageError string

func (e usageError) Error() string { return string(e) }

// run runs dsctl with args (without the program name) and returns the exit status: 0 on success, 1 when
// the command failed, 2 for a bad command line, 130 when ctx was cancelled (Ctrl-C).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{stdin: bufio.NewReader(stdin), stdout: stdout, stderr: stderr, getenv: getenv}
	c.stdinFile, _ = stdin.(*os.File)
	c.server = getenv("DS_SERVER")
	if c.server == "" {
		c.server = defaultServer
	}
	fs := c.flags("dsctl")
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return exitParse(err)
	}
	err := c.dispatch(ctx, fs.Args())
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "dsctl: %s\nRun 'dsctl help' for usage.\n", ue)
		return 2
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintln(stderr)
		return 130
	case sdk.IsUnauthorized(err) && getenv("DS_API_KEY") != "" && fs.Arg(0) != "login":
		fmt.Fprintf(stderr, "error: %v\nThe API key in DS_API_KEY is revoked, expired or unknown.\n", err)
		return 1
	case sdk.IsUnauthorized(err) && fs.Arg(0) != "login":
		fmt.Fprintf(stderr, "error: %v\nLog in again with: dsctl login\n", err)
		return 1
	default:
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
}

// exitParse is the exit status after a flag parsing error, which the flag package has already printed.
func exitParse(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// flags returns a flag set that also accepts the global flags, so that they may follow the command.
func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.StringVar(&c.server, "server", c.server, "the server's base URL")
	fs.BoolVar(&c.json, "json", c.json, "print JSON")
	return fs
}

// parse parses a command's flags, returning flag.ErrHelp or a usageError on failure.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError(err.Error())
	}
	return nil
}

func (c *cli) dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("no command given")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(c.stdout, usage)
		return nil
	case "signup":
		return c.signup(ctx, args)
	case "login":
		return c.login(ctx, args)
	case "logout":
		return c.logout(ctx, args)
	case "models":
		return c.models(ctx, args)
	case "chat":
		return c.chat(ctx, args)
	case "conversations", "conv":
		return c.conversations(ctx, args)
	case "keys":
		return c.keys(ctx, args)
	}
	return usageError(fmt.Sprintf("unknown command %q", cmd))
}

// readLine reads one line of stdin without its line end; io.EOF only when nothing was left.
func (c *cli) readLine() (string, error) {
	line, err := c.stdin.ReadString('\n')
	if err == io.EOF && line != "" {
		err = nil
	}
	return strings.TrimRight(line, "\r\n"), err
}
