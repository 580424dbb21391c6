// Package providertest holds the checks that the tests of every provider client share: that a stream keeps
// the Provider contract, that an error is the core error expected with the message clients see, and that a
// fake model server saw its request abandoned.
package providertest

import (
	"context"
	"errors"
	"iter"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/provider"
)

// The messages clients see, one per code of the provider errors.
const (
	NotFoundMsg    = "model not found"
	RefusedMsg     = "the model provider refused the request: "
	TimeoutMsg     = "the model provider did not answer in time"
	UnavailableMsg = "the model provider is unavailable"
	FailedMsg      = "the model provider failed in the middle of the answer"
	BusyMsg        = "the model server is busy with as many chats as this instance may run, retry shortly"
)

// Calls are the Provider methods, each reduced to its error, for tables of failures that every method must
// report alike. The chats send one user message.
var Calls = map[string]func(ctx context.Context, p provider.Provider, model string) error{
	"ChatStream": func(ctx context.Context, p provider.Provider, model string) error {
		for _, err := range p.ChatStream(ctx, provider.ChatRequest{Model: model, Messages: once}) {
			if err != nil {
				return err
			}
		}
		return nil
	},
	"Chat": func(ctx context.Context, p provider.Provider, model string) error {
		_, err := p.Chat(ctx, provider.ChatRequest{Model: model, Messages: once})
		return err
	},
	"Embed": func(ctx context.Context, p provider.Provider, model string) error {
		_, err := p.Embed(ctx, provider.EmbedRequest{Model: model, Input: []string{"x"}})
		return err
	},
	"ListModels": func(ctx context.Context, p provider.Provider, _ string) error {
		_, err := p.ListModels(ctx)
		return err
	},
	"ShowModel": func(ctx context.Context, p provider.Provider, model string) error {
		_, err := p.ShowModel(ctx, model)
		return err
	},
}

var once = []provider.Message{{Role: provider.RoleUser, Content: "Once upon a time"}}

// Collect runs a stream to its end, checking the contract: content chunks, then one final chunk or an error.
func Collect(tb testing.TB, seq iter.Seq2[provider.Chunk, error]) (contents []string, final provider.Chunk, err error) {
	tb.Helper()
	for c, err := range seq {
		if err != nil {
			return contents, final, err
		}
		if final.Done {
			tb.Fatalf("chunk %+v after the final chunk", c)
		}
		if c.Done {
			final = c
			continue
		}
		contents = append(contents, c.Content)
	}
	if !final.Done {
		tb.Fatal("stream ended without a final chunk or an error")
	}
	return contents, final, nil
}

// CheckError fails unless err is a *core.Error with code and message whose cause mentions cause.
func CheckError(tb testing.TB, err error, code core.Code, message, cause string) {
	tb.Helper()
	if got := core.ErrorCode(err); got != code {
		tb.Fatalf("error %v: code %q, want %q", err, got, code)
	}
	e, _ := errors.AsType[*core.Error](err)
	if e.Message != message {
		tb.Errorf("Message = %q, want %q", e.Message, message)
	}
	if e.Err == nil || !strings.Contains(e.Err.Error(), cause) {
		tb.Errorf("cause %v, want it to mention %q", e.Err, cause)
	}
}

// WantCancelled fails unless the fake saw its client go away within half a second.
func WantCancelled(tb testing.TB, fake interface {
	WaitCancelled(n int, timeout time.Duration) bool
}) {
	tb.Helper()
	if !fake.WaitCancelled(1, 500*time.Millisecond) {
		tb.Error("the upstream request was not cancelled within 500ms")
	}
}

// CheckRefused checks that every Provider method of p, whose server does not listen, fails with an
// UpstreamUnavailable error saying the connection was refused.
func CheckRefused(t *testing.T, p provider.Provider, model string) {
	for name, call := range Calls {
		t.Run(name, func(t *testing.T) {
			CheckError(t, call(t.Context(), p, model), core.UpstreamUnavailable, UnavailableMsg, "connection refused")
		})
	}
}

// ClosedURL returns the URL of a port of 127.0.0.1 where nothing listens, as when a model server is down.
func ClosedURL(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	_ = l.Close()
	return "http://" + l.Addr().String()
}
