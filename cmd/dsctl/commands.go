package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"golang.org/x/term"

	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/sdk"
)

// printJSON writes v as indented JSON.
func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// credentialsFrom reads the email (from the flag or a prompt) and the password: without echo from a
// terminal, else the next line of stdin.
func (c *cli) credentialsFrom(email string) (string, string, error) {
	tty := c.stdinFile != nil && term.IsTerminal(int(c.stdinFile.Fd()))
	if email == "" {
		if tty {
			fmt.Fprint(c.stderr, "Email: ")
		}
		line, err := c.readLine()
		if err != nil || strings.TrimSpace(line) == "" {
			return "", "", usageError("an email is required: pass -email or type it on stdin")
		}
		email = strings.TrimSpace(line)
	}
	if tty {
		fmt.Fprint(c.stderr, "Password: ")
		b, err := term.ReadPassword(int(c.stdinFile.Fd()))
		fmt.Fprintln(c.stderr)
		return email, string(b), err
	}
	password, err := c.readLine()
	if err != nil {
		return "", "", usageError("a password is required on stdin")
	}
	return email, password, nil
}

func (c *cli) signup(ctx context.Context, args []string) error {
	fs := c.flags("signup")
	email := fs.String("email", "", "the account's email (default: prompt)")
	if err := parse(fs, args); err != nil {
		return err
	}
	sess, err := c.newClient("")
	if err != nil {
		return err
	}
	address, password, err := c.credentialsFrom(*email)
	if err != nil {
		return err
	}
	user, err := sess.Signup(ctx, address, password)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(user)
	}
	fmt.Fprintf(c.stdout, "Created the account %s. Log in with: dsctl login -email %s\n", user.Email, user.Email)
	return nil
}

func (c *cli) login(ctx context.Context, args []string) error {
	fs := c.flags("login")
	email := fs.String("email", "", "the account's email (default: prompt)")
	if err := parse(fs, args); err != nil {
		return err
	}
	address, password, err := c.credentialsFrom(*email)
	if err != nil {
		return err
	}
	sess, err := c.newClient(address)
	if err != nil {
		return err
	}
	if err := sess.Login(ctx, address, password); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(map[string]string{"server": c.server, "email": address})
	}
	fmt.Fprintf(c.stdout, "Logged in to %s as %s.\n", c.server, address)
	return nil
}

func (c *cli) logout(ctx context.Context, args []string) error {
	if err := parse(c.flags("logout"), args); err != nil {
		return err
	}
	sess, err := c.session()
	if err != nil {
		return err
	}
	if err := sess.Logout(ctx); err != nil {
		return err
	}
	if !c.json {
		fmt.Fprintln(c.stdout, "Logged out.")
	}
	return nil
}

func (c *cli) models(ctx context.Context, args []string) error {
	if err := parse(c.flags("models"), args); err != nil {
		return err
	}
	sess, err := c.session()
	if err != nil {
		return err
	}
	models, err := sess.Models(ctx)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(client.ModelList{Models: models})
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tFAMILY\tPARAMETERS\tQUANTIZATION")
	for _, m := range models {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, bytesize(m.Size), m.Family, m.ParameterSize, m.QuantizationLevel)
	}
	return tw.Flush()
}

// bytesize formats n bytes for people, such as "1.1 MiB".
func bytesize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (c *cli) chat(ctx context.Context, args []string) error {
	fs := c.flags("chat")
	model := fs.String("m", "", "the model, such as llama3.2 (required)")
	conv := fs.String("c", "", "continue this conversation (an id from dsctl conversations list)")
	interactive := fs.Bool("i", false, "interactive: each line of stdin is a new turn of one conversation")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *model == "" {
		return usageError("chat needs a model: -m MODEL (see dsctl models)")
	}
	req := client.ChatRequest{Model: *model}
	if *conv != "" {
		id, err := uuid.Parse(*conv)
		if err != nil {
			return usageError(fmt.Sprintf("-c %q is not a conversation id", *conv))
		}
		req.ConversationId = &id
	}
	sess, err := c.session()
	if err != nil {
		return err
	}
	if *interactive {
		if c.json || fs.NArg() > 0 {
			return usageError("chat -i reads its prompts from stdin and prints text: drop --json and the prompt")
		}
		return c.chatInteractive(ctx, sess, req)
	}
	prompt := strings.Join(fs.Args(), " ")
	if strings.TrimSpace(prompt) == "" {
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return err
		}
		prompt = string(b)
	}
	if strings.TrimSpace(prompt) == "" {
		return usageError("chat needs a prompt: as arguments, or on stdin")
	}
	req.Messages = userTurn(prompt)
	if c.json {
		res, err := sess.Chat(ctx, req)
		if err != nil {
			return err
		}
		return c.printJSON(res)
	}
	id, err := c.stream(ctx, sess, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "conversation %s\n", id)
	return nil
}

func userTurn(prompt string) []client.ChatMessageInput {
	return []client.ChatMessageInput{{Role: client.RoleUser, Content: prompt}}
}

// chatInteractive sends each line of stdin as a turn of one conversation, printing the answers as they
// stream, until stdin ends.
func (c *cli) chatInteractive(ctx context.Context, sess *sdk.Client, req client.ChatRequest) error {
	if req.ConversationId != nil {
		fmt.Fprintf(c.stderr, "conversation %s\n", req.ConversationId)
	}
	for {
		fmt.Fprint(c.stderr, "> ")
		line, err := c.readLine()
		if errors.Is(err, io.EOF) {
			fmt.Fprintln(c.stderr)
			return nil
		}
		if err != nil {
			return err
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		req.Messages = userTurn(line)
		id, err := c.stream(ctx, sess, req)
		if err != nil {
			return err
		}
		if req.ConversationId == nil {
			req.ConversationId = &id
			fmt.Fprintf(c.stderr, "conversation %s\n", id)
		}
	}
}

// stream prints the answer to req as it arrives, each piece written as soon as it comes, and returns the
// conversation's id.
func (c *cli) stream(ctx context.Context, sess *sdk.Client, req client.ChatRequest) (uuid.UUID, error) {
	var id uuid.UUID
	printed := false
	for ev, err := range sess.ChatStream(ctx, req) {
		if err != nil {
			if printed {
				fmt.Fprintln(c.stdout) // end the partial answer's line
			}
			return id, err
		}
		switch ev := ev.(type) {
		case sdk.Meta:
			id = ev.ConversationId
		case sdk.Delta:
			if _, err := io.WriteString(c.stdout, ev.Content); err != nil {
				return id, err
			}
			printed = true
		case sdk.Done:
			fmt.Fprintln(c.stdout)
		}
	}
	return id, nil
}

func (c *cli) conversations(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("conversations needs a subcommand: list, show ID or rm ID")
	}
	sub, args := args[0], args[1:]
	fs := c.flags("conversations " + sub)
	var limit *int
	var cursor *string
	switch sub {
	case "list", "ls":
		limit = fs.Int("limit", 0, "how many to list (default: the server's page size)")
		cursor = fs.String("cursor", "", "the cursor of the next page, printed after a full page")
	case "show", "rm":
	default:
		return usageError(fmt.Sprintf("unknown conversations subcommand %q: want list, show or rm", sub))
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	var id uuid.UUID
	if sub == "show" || sub == "rm" {
		if fs.NArg() != 1 {
			return usageError(fmt.Sprintf("conversations %s needs one conversation id", sub))
		}
		var err error
		if id, err = uuid.Parse(fs.Arg(0)); err != nil {
			return usageError(fmt.Sprintf("%q is not a conversation id", fs.Arg(0)))
		}
	} else if fs.NArg() != 0 {
		return usageError("conversations list takes no arguments")
	}
	sess, err := c.session()
	if err != nil {
		return err
	}
	switch sub {
	case "show":
		return c.showConversation(ctx, sess, id)
	case "rm":
		if err := sess.DeleteConversation(ctx, id); err != nil {
			return err
		}
		if !c.json {
			fmt.Fprintf(c.stdout, "Deleted conversation %s.\n", id)
		}
		return nil
	}
	page, err := sess.Conversations(ctx, *limit, *cursor)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(page)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUPDATED\tMODEL\tTITLE")
	for _, conv := range page.Items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", conv.Id, conv.UpdatedAt.Local().Format(time.DateTime), conv.Model, conv.Title)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.NextCursor != nil {
		fmt.Fprintf(c.stderr, "More: dsctl conversations list -cursor %s\n", *page.NextCursor)
	}
	return nil
}

func (c *cli) showConversation(ctx context.Context, sess *sdk.Client, id uuid.UUID) error {
	conv, err := sess.Conversation(ctx, id)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(conv)
	}
	fmt.Fprintf(c.stdout, "%s\n%s · %s · updated %s\n", conv.Title, conv.Id, conv.Model, conv.UpdatedAt.Local().Format(time.DateTime))
	for _, m := range conv.Messages {
		status := ""
		if m.Status == client.Incomplete {
			status = " (incomplete)"
		}
		fmt.Fprintf(c.stdout, "\n[%s]%s\n%s\n", m.Role, status, m.Content)
	}
	return nil
}
