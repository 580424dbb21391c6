package benche2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/deepersensor/deepersensor/gen/client"
)

// user is an account of the run: its password, an access token and an API key.
type user struct {
	email, password string
	token, apiKey   string
}

// loopbackAddr returns the i-th address of the block 127.<block>.0.0/16, from 127.<block>.0.1 on. Clients
// that log in from addresses of their own are limited per address as separate clients are.
func loopbackAddr(block byte, i int) net.IP {
	return net.IPv4(127, block, byte(i/250), byte(i%250+1))
}

// clientFrom returns an HTTP client whose connections come from the loopback address ip.
func clientFrom(ip net.IP, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true},
	}
}

// createUsers signs up n accounts, each from a loopback address of its own so that the limits on sign-up
// and login stay as configured, logs each in and gives each an API key.
func createUsers(ctx context.Context, gatewayURL string, n int) ([]user, error) {
	users := make([]user, n)
	for i := range users {
		c, err := client.NewClientWithResponses(gatewayURL, client.WithHTTPClient(clientFrom(loopbackAddr(2, i), 30*time.Second)))
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		u := user{email: fmt.Sprintf("bench%d@example.com", i), password: "correct horse battery staple"}
		creds := client.Credentials{Email: u.email, Password: u.password}
		signup, err := c.SignupWithResponse(ctx, creds)
		if err != nil || signup.JSON201 == nil {
			return nil, fmt.Errorf("sign up %s: %w", u.email, answerError(err, signup.StatusCode(), signup.Body))
		}
		login, err := c.LoginWithResponse(ctx, creds)
		if err != nil || login.JSON200 == nil {
			return nil, fmt.Errorf("log in %s: %w", u.email, answerError(err, login.StatusCode(), login.Body))
		}
		u.token = login.JSON200.AccessToken
		key, err := c.CreateAPIKeyWithResponse(ctx, client.NewAPIKey{Name: "bench"}, bearer(u.token))
		if err != nil || key.JSON201 == nil {
			return nil, fmt.Errorf("create an API key for %s: %w", u.email, answerError(err, key.StatusCode(), key.Body))
		}
		u.apiKey = key.JSON201.Secret
		users[i] = u
	}
	return users, nil
}

func bearer(token string) client.RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+token)
		return nil
	}
}

// answerError describes a failed call: its transport error, or its unexpected status and body.
func answerError(err error, status int, body []byte) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("status %d: %.300s", status, body)
}
