package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/gen/client"
)

// keys runs "keys create|list|rm": the user's API keys.
func (c *cli) keys(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("keys needs a subcommand: create NAME, list or rm ID")
	}
	sub, args := args[0], args[1:]
	fs := c.flags("keys " + sub)
	var expires *string
	switch sub {
	case "create":
		expires = fs.String("expires", "", "when the key stops working: a duration such as 720h, or a time such as 2027-01-31T00:00:00Z (default: never)")
	case "list", "ls", "rm":
	default:
		return usageError(fmt.Sprintf("unknown keys subcommand %q: want create, list or rm", sub))
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case sub == "create" && fs.NArg() != 1:
		return usageError("keys create needs one name: what the key is for, such as laptop")
	case sub == "rm" && fs.NArg() != 1:
		return usageError("keys rm needs one key id")
	case (sub == "list" || sub == "ls") && fs.NArg() != 0:
		return usageError("keys list takes no arguments")
	}
	sess, err := c.session()
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		expiresAt, err := parseExpiry(*expires, time.Now())
		if err != nil {
			return err
		}
		key, err := sess.CreateAPIKey(ctx, fs.Arg(0), expiresAt)
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(key)
		}
		// The secret alone on stdout, so that it can be piped or redirected; the rest is for the person.
		fmt.Fprintf(c.stderr, "Created the API key %q (%s). This is the only time its secret is shown; keep it safe.\n", key.Name, key.Id)
		fmt.Fprintln(c.stdout, key.Secret)
		return nil
	case "rm":
		id, err := uuid.Parse(fs.Arg(0))
		if err != nil {
			return usageError(fmt.Sprintf("%q is not a key id", fs.Arg(0)))
		}
		if err := sess.DeleteAPIKey(ctx, id); err != nil {
			return err
		}
		if !c.json {
			fmt.Fprintf(c.stdout, "Revoked the API key %s.\n", id)
		}
		return nil
	}
	keys, err := sess.APIKeys(ctx)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(client.APIKeyList{Items: keys})
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPREFIX\tNAME\tCREATED\tLAST USED\tEXPIRES")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.Id, k.Prefix, k.Name, k.CreatedAt.Local().Format(time.DateTime),
			timeOr(k.LastUsedAt, "never"), timeOr(k.ExpiresAt, "never"))
	}
	return tw.Flush()
}

// parseExpiry reads -expires: "" for none, a duration from now, or an RFC 3339 time.
func parseExpiry(s string, now time.Time) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		t := now.Add(d)
		return &t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, usageError(fmt.Sprintf("-expires %q is neither a duration such as 720h nor a time such as 2027-01-31T00:00:00Z", s))
	}
	return &t, nil
}

// timeOr formats t for people, or returns none when it is nil.
func timeOr(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.Local().Format(time.DateTime)
}
