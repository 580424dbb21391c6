package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/deepersensor/deepersensor/gen/client"
)

// Client talks to one DeeperSensor server on behalf of one user. It keeps the user's token pair, sends the
// access token with every call and refreshes the pair when needed; or, made WithAPIKey, sends the key. It is
// safe for concurrent use.
type Client struct {
	raw      *client.Client              // the SDK's own calls, which set Authorization per request
	api      *client.ClientWithResponses // handed out by API, sending the current access token
	onTokens func(TokenSet)
	apiKey   string // sent instead of an access token, when set

	refreshMu sync.Mutex // held while refreshing, so that concurrent callers use a refresh token once
	mu        sync.Mutex // guards tokens
	tokens    TokenSet
}

// TokenSet is a user's session: what Login and each refresh return. Save it to resume the session later
// with SetTokens; it marshals to JSON.
type TokenSet struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	// Expiry is when the access token expires, from the server's expires_in; zero means unknown.
	Expiry time.Time `json:"expiry,omitzero"`
}

// expiryMargin is how long before its expiry an access token is replaced, so that it does not expire in
// flight.
const expiryMargin = 10 * time.Second

// expiring reports whether the access token expires within expiryMargin of now.
func (t TokenSet) expiring(now time.Time) bool {
	return !t.Expiry.IsZero() && now.After(t.Expiry.Add(-expiryMargin))
}

// Option configures a Client.
type Option func(*settings)

type settings struct {
	httpClient *http.Client
	userAgent  string
	onTokens   func(TokenSet)
	apiKey     string
}

// WithHTTPClient sends the requests with hc instead of http.DefaultClient, for example to set a proxy or
// TLS roots. Leave hc's Timeout at zero: it would cut long chat streams; use contexts instead.
func WithHTTPClient(hc *http.Client) Option {
	return func(s *settings) { s.httpClient = hc }
}

// WithUserAgent sets the User-Agent header of every request, so that the server's logs name the program.
func WithUserAgent(ua string) Option {
	return func(s *settings) { s.userAgent = ua }
}

// OnTokens registers fn to be called with the new token set after Login, after every refresh and, with the
// zero TokenSet, after Logout, so that a program can persist the session. fn is called synchronously and
// must not call the Client.
func OnTokens(fn func(TokenSet)) Option {
	return func(s *settings) { s.onTokens = fn }
}

// WithAPIKey authenticates every call with an API key (ds_...) instead of a session, for programs that
// cannot log in: no Login is needed. A key is never refreshed, so a 401 answer is final: the key was
// revoked, expired, or its account deleted.
func WithAPIKey(key string) Option {
	return func(s *settings) { s.apiKey = key }
}

// New returns a Client for the server at baseURL, such as "http://127.0.0.1:8080". It has no session until
// Login or SetTokens, unless it is made WithAPIKey.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("sdk: server URL %q must be an absolute http or https URL", baseURL)
	}
	s := settings{httpClient: http.DefaultClient}
	for _, o := range opts {
		o(&s)
	}
	c := &Client{onTokens: s.onTokens, apiKey: s.apiKey}
	common := []client.ClientOption{client.WithHTTPClient(s.httpClient)}
	if s.userAgent != "" {
		common = append(common, client.WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
			req.Header.Set("User-Agent", s.userAgent)
			return nil
		}))
	}
	if c.raw, err = client.NewClient(baseURL, common...); err != nil {
		return nil, fmt.Errorf("sdk: %w", err)
	}
	if c.api, err = client.NewClientWithResponses(baseURL, append(common, client.WithRequestEditorFn(c.authorize))...); err != nil {
		return nil, fmt.Errorf("sdk: %w", err)
	}
	return c, nil
}

// API returns the generated client for the operations this package does not wrap. Its requests carry the
// current access token, refreshed first when it is about to expire, but a 401 answer is not retried.
// Never read a chat stream with its StreamChatWithResponse: it waits for the whole stream; use ChatStream.
func (c *Client) API() *client.ClientWithResponses { return c.api }

// authorize is the request editor of API's client.
func (c *Client) authorize(ctx context.Context, req *http.Request) error {
	if req.Header.Get("Authorization") != "" {
		return nil
	}
	token, err := c.accessToken(ctx)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return nil
}

// Tokens returns the current session, for saving it.
func (c *Client) Tokens() TokenSet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens
}

// SetTokens resumes a saved session.
func (c *Client) SetTokens(t TokenSet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tokens = t
}

// replaceTokens stores a new session and tells the OnTokens callback.
func (c *Client) replaceTokens(t TokenSet) {
	c.SetTokens(t)
	if c.onTokens != nil {
		c.onTokens(t)
	}
}

// tokensFrom turns the server's token pair into a TokenSet.
func tokensFrom(p client.TokenPair) TokenSet {
	return TokenSet{
		AccessToken:  p.AccessToken,
		RefreshToken: p.RefreshToken,
		Expiry:       time.Now().Add(time.Duration(p.ExpiresIn) * time.Second),
	}
}

// Signup creates an account. It does not log in.
func (c *Client) Signup(ctx context.Context, email, password string) (client.User, error) {
	resp, err := c.raw.Signup(ctx, client.Credentials{Email: email, Password: password})
	return decode[client.User](resp, err, http.StatusCreated)
}

// Login starts a session with the account's email and password and keeps its tokens.
func (c *Client) Login(ctx context.Context, email, password string) error {
	resp, err := c.raw.Login(ctx, client.Credentials{Email: email, Password: password})
	pair, err := decode[client.TokenPair](resp, err, http.StatusOK)
	if err != nil {
		return err
	}
	c.replaceTokens(tokensFrom(pair))
	return nil
}

// Logout ends the session on the server, revoking its refresh token, and forgets the tokens. The tokens are
// forgotten even when the server could not be told.
func (c *Client) Logout(ctx context.Context) error {
	refresh := c.Tokens().RefreshToken
	c.replaceTokens(TokenSet{})
	if refresh == "" {
		return nil
	}
	resp, err := c.raw.Logout(ctx, client.RefreshRequest{RefreshToken: refresh})
	return expectNoContent(resp, err)
}

// accessToken returns the bearer token to send: the API key, or the access token, refreshing the session
// first when the token is about to expire. It is empty when there is neither.
func (c *Client) accessToken(ctx context.Context) (string, error) {
	if c.apiKey != "" {
		return c.apiKey, nil
	}
	t := c.Tokens()
	if t.RefreshToken == "" || !t.expiring(time.Now()) {
		return t.AccessToken, nil
	}
	return c.refresh(ctx, t.AccessToken)
}

// refresh exchanges the refresh token for a new pair and returns the new access token, unless another
// caller already replaced stale, the access token that failed or expired: then it returns that caller's
// token. Refresh tokens are single-use and reusing one revokes the session, so refreshes are serialised.
func (c *Client) refresh(ctx context.Context, stale string) (string, error) {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	t := c.Tokens()
	if t.AccessToken != stale {
		return t.AccessToken, nil
	}
	resp, err := c.raw.Refresh(ctx, client.RefreshRequest{RefreshToken: t.RefreshToken})
	pair, err := decode[client.TokenPair](resp, err, http.StatusOK)
	if err != nil {
		return "", fmt.Errorf("refresh the session: %w", err)
	}
	c.replaceTokens(tokensFrom(pair))
	return pair.AccessToken, nil
}

// do sends an authenticated request built by call. When the access token is about to expire, or the server
// answers 401, it refreshes the session once and, for a 401, sends the request again. An API key is never
// refreshed.
func (c *Client) do(ctx context.Context, call func(client.RequestEditorFn) (*http.Response, error)) (*http.Response, error) {
	token, err := c.accessToken(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := call(bearer(token))
	if err != nil || resp.StatusCode != http.StatusUnauthorized || c.apiKey != "" || c.Tokens().RefreshToken == "" {
		return resp, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	if token, err = c.refresh(ctx, token); err != nil {
		return nil, err
	}
	return call(bearer(token))
}

// bearer is a request editor that sends token, if any.
func bearer(token string) client.RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return nil
	}
}

// decode reads a JSON answer with status want into a T; any other status becomes an *Error.
func decode[T any](resp *http.Response, err error, want int) (T, error) {
	var v T
	if err != nil {
		return v, err
	}
	if resp.StatusCode != want {
		return v, errorFrom(resp)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return v, fmt.Errorf("decode the answer of %s %s: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	return v, nil
}

// expectNoContent checks for a 204 answer; any other status becomes an *Error.
func expectNoContent(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusNoContent {
		return errorFrom(resp)
	}
	return resp.Body.Close()
}
