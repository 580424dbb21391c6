package testapp

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/deepersensor/deepersensor/gen/client"
)

// TestPassword is the password of users made by NewUser.
const TestPassword = "correct horse battery staple"

// NewUser signs up a user with a fresh email and logs in, returning the email and the token pair.
func (a *App) NewUser(tb testing.TB) (string, client.TokenPair) {
	tb.Helper()
	email := "user-" + strings.ToLower(rand.Text()[:10]) + "@example.com"
	c := a.Client(tb)
	ctx := context.Background()
	signup, err := c.SignupWithResponse(ctx, client.Credentials{Email: email, Password: TestPassword})
	if err != nil {
		tb.Fatalf("signup %s: %v", email, err)
	}
	if signup.StatusCode() != http.StatusCreated {
		tb.Fatalf("signup %s: %d %s", email, signup.StatusCode(), signup.Body)
	}
	login, err := c.LoginWithResponse(ctx, client.Credentials{Email: email, Password: TestPassword})
	if err != nil {
		tb.Fatalf("login %s: %v", email, err)
	}
	if login.JSON200 == nil {
		tb.Fatalf("login %s: %d %s", email, login.StatusCode(), login.Body)
	}
	return email, *login.JSON200
}

// UserClient signs up and logs in a new user and returns an SDK client that sends its access token.
func (a *App) UserClient(tb testing.TB) *client.ClientWithResponses {
	tb.Helper()
	_, tokens := a.NewUser(tb)
	return a.Client(tb, Bearer(tokens.AccessToken))
}

// Problem decodes a problem+json body, failing tb when it is not one.
func Problem(tb testing.TB, resp *http.Response, body []byte) client.Problem {
	tb.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		tb.Fatalf("Content-Type = %q, want application/problem+json; body %s", ct, body)
	}
	var p client.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		tb.Fatalf("decode problem %s: %v", body, err)
	}
	if p.Status != resp.StatusCode || p.Type == "" || p.Title == "" || p.Detail == "" {
		tb.Errorf("problem %+v is incomplete or disagrees with status %d", p, resp.StatusCode)
	}
	if p.RequestId == "" || p.RequestId != resp.Header.Get("X-Request-ID") {
		tb.Errorf("problem request_id %q, X-Request-ID %q: want equal and set", p.RequestId, resp.Header.Get("X-Request-ID"))
	}
	return p
}
