package server_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// FuzzRequestDecoding sends arbitrary bodies to the routes that decode JSON. Whatever arrives, the answer is
// one the contract documents (the client validates it) and never a 5xx.
func FuzzRequestDecoding(f *testing.F) {
	a := testapp.Start(f, testapp.Options{Configure: func(c *config.Config) {
		many := config.Rate{Limit: 1_000_000, Period: time.Minute}
		c.RateLimitAuthIP, c.RateLimitLoginEmail, c.RateLimitUser, c.RateLimitChat = many, many, many, many
	}})
	_, tokens := a.NewUser(f)
	c := a.Client(f, testapp.Bearer(tokens.AccessToken))
	chat, err := c.ChatWithResponse(context.Background(), client.ChatRequest{Model: "tiny", Messages: userMessage("hi")})
	if err != nil || chat.JSON200 == nil {
		f.Fatalf("chat: %v", err)
	}
	routes := []struct{ method, path string }{
		{http.MethodPost, "/v1/chat"},
		{http.MethodPost, "/v1/auth/signup"},
		{http.MethodPost, "/v1/auth/login"},
		{http.MethodPost, "/v1/auth/refresh"},
		{http.MethodPatch, "/v1/conversations/" + chat.JSON200.ConversationId.String()},
	}
	for _, seed := range []string{
		`{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"tiny","messages":[{"role":"user","content":"hi"}],"options":{"temperature":0.5,"stop":["x"]}}`,
		`{"email":"fuzz@example.com","password":"password-1"}`,
		`{"refresh_token":"x"}`,
		`{"title":"t"}`,
		`{"model":"tiny","messages":[{"role":"user","content":"\ud800"}]}`,
		`{"a":1}}`, `[]`, `null`, `"x"`, `{`, ``,
	} {
		for i := range routes {
			f.Add(uint8(i), []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := routes[int(route)%len(routes)]
		req, err := http.NewRequest(r.method, a.URL+r.path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tokens.AccessToken)
		resp, err := a.HTTPClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s with %q = %d %s", r.method, r.path, body, resp.StatusCode, data)
		}
	})
}
