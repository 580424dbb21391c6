package server_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

func TestSignup(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	c := a.Client(t)
	ctx := context.Background()
	first, err := c.SignupWithResponse(ctx, client.Credentials{Email: "  Ada@Example.com ", Password: "password-1"})
	if err != nil {
		t.Fatal(err)
	}
	if first.JSON201 == nil || first.JSON201.Email != "Ada@Example.com" || first.JSON201.Id == uuid.Nil {
		t.Fatalf("signup = %d %s, want 201 with the trimmed email", first.StatusCode(), first.Body)
	}

	tests := []struct {
		name      string
		body      string
		ctype     string
		wantCode  int
		wantField string
	}{
		{"duplicate email", `{"email":"Ada@Example.com","password":"password-2"}`, "", http.StatusConflict, ""},
		{"duplicate email in other case", `{"email":" ada@EXAMPLE.COM","password":"password-2"}`, "", http.StatusConflict, ""},
		{"invalid email", `{"email":"not-an-email","password":"password-2"}`, "", http.StatusUnprocessableEntity, "email"},
		{"email with a name", `{"email":"Ada <ada2@example.com>","password":"password-2"}`, "", http.StatusUnprocessableEntity, "email"},
		{"email without a domain dot", `{"email":"ada@localhost","password":"password-2"}`, "", http.StatusUnprocessableEntity, "email"},
		{"password too short", `{"email":"b@example.com","password":"1234567"}`, "", http.StatusBadRequest, "password"},
		{"password too long", `{"email":"b@example.com","password":"` + strings.Repeat("x", 129) + `"}`, "", http.StatusBadRequest, "password"},
		{"password of 7 multibyte characters is too short", `{"email":"c@example.com","password":"ééééééé"}`, "", http.StatusBadRequest, "password"},
		{"password of 8 multibyte characters is fine in length", `{"email":"c@example.com","password":"éééééééé"}`, "", http.StatusCreated, ""},
		{"missing password", `{"email":"b@example.com"}`, "", http.StatusBadRequest, "password"},
		{"missing email", `{"password":"password-2"}`, "", http.StatusBadRequest, "email"},
		{"wrong type", `{"email":42,"password":"password-2"}`, "", http.StatusBadRequest, "email"},
		{"malformed JSON", `{"email":`, "", http.StatusBadRequest, "body"},
		{"empty body", ``, "", http.StatusBadRequest, "body"},
		{"wrong content type", `email=b@example.com`, "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType, ""},
		{"valid", `{"email":"d@example.com","password":"12345678"}`, "", http.StatusCreated, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctype := tt.ctype
			if ctype == "" {
				ctype = "application/json"
			}
			resp, err := c.SignupWithBodyWithResponse(ctx, ctype, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != tt.wantCode {
				t.Fatalf("status = %d, want %d; body %s", resp.StatusCode(), tt.wantCode, resp.Body)
			}
			if tt.wantCode < 400 {
				return
			}
			p := testapp.Problem(t, resp.HTTPResponse, resp.Body)
			if tt.wantField == "" {
				return
			}
			if p.Errors == nil || len(*p.Errors) == 0 || (*p.Errors)[0].Field != tt.wantField {
				t.Errorf("problem errors = %+v, want field %q", p.Errors, tt.wantField)
			}
			if !strings.Contains(p.Detail, tt.wantField) {
				t.Errorf("detail %q does not name %q", p.Detail, tt.wantField)
			}
		})
	}
}

func TestLogin(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	email, _ := a.NewUser(t)
	c := a.Client(t)
	ctx := context.Background()

	ok, err := c.LoginWithResponse(ctx, client.Credentials{Email: " " + strings.ToUpper(email) + " ", Password: testapp.TestPassword})
	if err != nil {
		t.Fatal(err)
	}
	if ok.JSON200 == nil {
		t.Fatalf("login = %d %s, want 200", ok.StatusCode(), ok.Body)
	}
	if ok.JSON200.TokenType != client.Bearer || ok.JSON200.ExpiresIn != 900 || ok.JSON200.AccessToken == "" || len(ok.JSON200.RefreshToken) != 43 {
		t.Errorf("token pair = %+v", ok.JSON200)
	}
	me, err := c.GetMeWithResponse(ctx, testapp.Bearer(ok.JSON200.AccessToken))
	if err != nil {
		t.Fatal(err)
	}
	if me.JSON200 == nil || me.JSON200.Email != email {
		t.Fatalf("me = %d %s", me.StatusCode(), me.Body)
	}

	wrongPassword, err := c.LoginWithResponse(ctx, client.Credentials{Email: email, Password: "Not-The-Password-42"})
	if err != nil {
		t.Fatal(err)
	}
	unknownEmail, err := c.LoginWithResponse(ctx, client.Credentials{Email: "nobody@example.com", Password: "Not-The-Password-42"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*client.LoginResponse{wrongPassword, unknownEmail} {
		if r.StatusCode() != http.StatusUnauthorized {
			t.Fatalf("failed login = %d %s, want 401", r.StatusCode(), r.Body)
		}
	}
	p1 := testapp.Problem(t, wrongPassword.HTTPResponse, wrongPassword.Body)
	p2 := testapp.Problem(t, unknownEmail.HTTPResponse, unknownEmail.Body)
	p1.RequestId, p2.RequestId = "", ""
	if p1.Type != p2.Type || p1.Title != p2.Title || p1.Detail != p2.Detail || p1.Status != p2.Status || p1.Errors != nil || p2.Errors != nil {
		t.Errorf("wrong password and unknown email differ: %+v vs %+v", p1, p2)
	}
	logs := a.Logs.String()
	if n := strings.Count(logs, `"msg":"login failed"`); n != 2 {
		t.Errorf("logged %d failed-login warnings, want 2", n)
	}
	for _, secret := range []string{testapp.TestPassword, "Not-The-Password-42", ok.JSON200.AccessToken, ok.JSON200.RefreshToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a secret %q", secret)
		}
	}
}

// TestLoginTakesEqualTimeForUnknownEmail checks that an unknown email costs a password verification too,
// with the production hashing parameters, so that timing does not tell which accounts exist.
func TestLoginTakesEqualTimeForUnknownEmail(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		c.Argon2Memory, c.Argon2Time, c.Argon2Parallelism = 19456, 2, 1
	}})
	email, _ := a.NewUser(t)
	c := a.Client(t)
	median := func(creds client.Credentials) time.Duration {
		var times []time.Duration
		for range 5 {
			start := time.Now()
			resp, err := c.LoginWithResponse(context.Background(), creds)
			if err != nil || resp.StatusCode() != http.StatusUnauthorized {
				t.Fatalf("login: %v", err)
			}
			times = append(times, time.Since(start))
		}
		slices.Sort(times)
		return times[len(times)/2]
	}
	known := median(client.Credentials{Email: email, Password: "Not-The-Password-42"})
	unknown := median(client.Credentials{Email: "nobody@example.com", Password: "Not-The-Password-42"})
	if ratio := float64(unknown) / float64(known); ratio < 0.5 || ratio > 2 {
		t.Errorf("unknown email took %v, wrong password %v: ratio %.2f, want within 0.5..2", unknown, known, ratio)
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	_, first := a.NewUser(t)
	c := a.Client(t)
	ctx := context.Background()
	refresh := func(token string) *client.RefreshResponse {
		t.Helper()
		resp, err := c.RefreshWithResponse(ctx, client.RefreshRequest{RefreshToken: token})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	second := refresh(first.RefreshToken)
	if second.JSON200 == nil || second.JSON200.RefreshToken == first.RefreshToken {
		t.Fatalf("refresh = %d %s, want a new pair", second.StatusCode(), second.Body)
	}
	me, err := c.GetMeWithResponse(ctx, testapp.Bearer(second.JSON200.AccessToken))
	if err != nil || me.JSON200 == nil {
		t.Fatalf("me with refreshed token: %v %s", err, me.Body)
	}
	third := refresh(second.JSON200.RefreshToken)
	if third.JSON200 == nil {
		t.Fatalf("second refresh = %d %s", third.StatusCode(), third.Body)
	}

	// The first token was used already: presenting it again is theft, and the whole family dies.
	reused := refresh(first.RefreshToken)
	if reused.StatusCode() != http.StatusUnauthorized {
		t.Fatalf("reuse = %d %s, want 401", reused.StatusCode(), reused.Body)
	}
	testapp.Problem(t, reused.HTTPResponse, reused.Body)
	if latest := refresh(third.JSON200.RefreshToken); latest.StatusCode() != http.StatusUnauthorized {
		t.Fatalf("refresh with the newest token of a revoked family = %d, want 401", latest.StatusCode())
	}
	for _, access := range []string{first.AccessToken, second.JSON200.AccessToken, third.JSON200.AccessToken} {
		wantStatus(t, a, "access token of a reused family", access, http.StatusUnauthorized)
	}
	if !strings.Contains(a.Logs.String(), "refresh token reused") {
		t.Error("reuse was not logged")
	}
	if unknown := refresh("not-a-token"); unknown.StatusCode() != http.StatusUnauthorized {
		t.Errorf("unknown token = %d, want 401", unknown.StatusCode())
	}

	// Another login is another family, untouched by the revocation.
	email, other := a.NewUser(t)
	_ = email
	if r := refresh(other.RefreshToken); r.JSON200 == nil {
		t.Errorf("refresh in another family = %d", r.StatusCode())
	}
}

func TestLogout(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	_, tokens := a.NewUser(t)
	c := a.Client(t)
	ctx := context.Background()
	rotated, err := c.RefreshWithResponse(ctx, client.RefreshRequest{RefreshToken: tokens.RefreshToken})
	if err != nil || rotated.JSON200 == nil {
		t.Fatalf("refresh: %v", err)
	}
	out, err := c.LogoutWithResponse(ctx, client.RefreshRequest{RefreshToken: rotated.JSON200.RefreshToken})
	if err != nil || out.StatusCode() != http.StatusNoContent {
		t.Fatalf("logout = %v %d", err, out.StatusCode())
	}
	after, err := c.RefreshWithResponse(ctx, client.RefreshRequest{RefreshToken: rotated.JSON200.RefreshToken})
	if err != nil || after.StatusCode() != http.StatusUnauthorized {
		t.Fatalf("refresh after logout = %v %d, want 401", err, after.StatusCode())
	}
	wantStatus(t, a, "access token after logout", rotated.JSON200.AccessToken, http.StatusUnauthorized)
	again, err := c.LogoutWithResponse(ctx, client.RefreshRequest{RefreshToken: "unknown"})
	if err != nil || again.StatusCode() != http.StatusNoContent {
		t.Fatalf("logout with an unknown token = %v %d, want 204", err, again.StatusCode())
	}
}

func TestBadAccessTokens(t *testing.T) {
	const previous = "previous-secret-previous-secret-0123456789"
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.JWTPreviousSecrets = []string{previous} }})
	_, tokens := a.NewUser(t)
	userID := subject(t, tokens.AccessToken)
	now := time.Now()
	valid := jwt.MapClaims{
		"iss": a.Config.JWTIssuer, "aud": a.Config.JWTAudience, "sub": userID, "sid": uuid.NewString(),
		"exp": now.Add(time.Minute).Unix(), "iat": now.Unix(), "jti": "x",
	}
	with := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{}
		for k, v := range valid {
			c[k] = v
		}
		change(c)
		return c
	}
	sign := func(method jwt.SigningMethod, claims jwt.MapClaims, secret string) string {
		tok := jwt.NewWithClaims(method, claims)
		tok.Header["kid"], tok.Header["typ"] = kid(secret), "at+jwt"
		s, err := tok.SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	none := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, valid)
		tok.Header["kid"], tok.Header["typ"] = kid(testapp.TestJWTSecret), "at+jwt"
		s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()

	typJWT := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, valid)
		tok.Header["kid"] = kid(testapp.TestJWTSecret) // and the library's default typ, JWT
		s, err := tok.SignedString([]byte(testapp.TestJWTSecret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()

	tests := []struct {
		name   string
		header string
		want   int
	}{
		{"valid login token", "Bearer " + tokens.AccessToken, http.StatusOK},
		{"valid, signed by hand", "Bearer " + sign(jwt.SigningMethodHS256, valid, testapp.TestJWTSecret), http.StatusOK},
		{"signed with the previous secret", "Bearer " + sign(jwt.SigningMethodHS256, valid, previous), http.StatusOK},
		{"lower-case scheme", "bearer " + tokens.AccessToken, http.StatusOK},
		{"missing", "", http.StatusUnauthorized},
		{"empty bearer", "Bearer ", http.StatusUnauthorized},
		{"other scheme", "Basic dXNlcjpwYXNz", http.StatusUnauthorized},
		{"malformed", "Bearer not.a.jwt", http.StatusUnauthorized},
		{"garbage", "Bearer " + strings.Repeat("A", 500), http.StatusUnauthorized},
		{"expired", "Bearer " + sign(jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() }), testapp.TestJWTSecret), http.StatusUnauthorized},
		{"without exp", "Bearer " + sign(jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { delete(c, "exp") }), testapp.TestJWTSecret), http.StatusUnauthorized},
		{"without iat", "Bearer " + sign(jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { delete(c, "iat") }), testapp.TestJWTSecret), http.StatusUnauthorized},
		{"without jti", "Bearer " + sign(jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { delete(c, "jti") }), testapp.TestJWTSecret), http.StatusUnauthorized},
		{"issued in the future", "Bearer " + sign(jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() }), testapp.TestJWTSecret), http.StatusUnauthorized},
		{"wrong issuer", "Bearer " + sign(jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["iss"] = "someone-else" }), testapp.TestJWTSecret), http.StatusUnauthorized},
		{"wrong audience", "Bearer " + sign(jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["aud"] = "other-api" }), testapp.TestJWTSecret), http.StatusUnauthorized},
		{"subject not a user id", "Bearer " + sign(jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["sub"] = "admin" }), testapp.TestJWTSecret), http.StatusUnauthorized},
		{"subject of no account", "Bearer " + sign(jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["sub"] = uuid.NewString() }), testapp.TestJWTSecret), http.StatusUnauthorized},
		{"wrong secret", "Bearer " + sign(jwt.SigningMethodHS256, valid, "another-secret-another-secret-0123456789"), http.StatusUnauthorized},
		{"HS512 instead of HS256", "Bearer " + sign(jwt.SigningMethodHS512, valid, testapp.TestJWTSecret), http.StatusUnauthorized},
		{"alg none", "Bearer " + none, http.StatusUnauthorized},
		{"tampered payload", "Bearer " + tamper(tokens.AccessToken), http.StatusUnauthorized},
		{"typ JWT", "Bearer " + typJWT, http.StatusUnauthorized},
		{"exp a string", "Bearer " + sign(jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["exp"] = fmt.Sprint(now.Add(time.Minute).Unix()) }), testapp.TestJWTSecret), http.StatusUnauthorized},
		{"lives longer than the TTL", "Bearer " + sign(jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["exp"] = now.Add(a.Config.AccessTokenTTL + time.Second).Unix() }), testapp.TestJWTSecret), http.StatusUnauthorized},
		{"without sid", "Bearer " + sign(jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { delete(c, "sid") }), testapp.TestJWTSecret), http.StatusUnauthorized},
	}
	c := a.Client(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.GetMeWithResponse(context.Background(), func(_ context.Context, req *http.Request) error {
				if tt.header != "" {
					req.Header.Set("Authorization", tt.header)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != tt.want {
				t.Fatalf("status = %d, want %d; body %s", resp.StatusCode(), tt.want, resp.Body)
			}
			if tt.want != http.StatusUnauthorized {
				return
			}
			if got := resp.HTTPResponse.Header.Get("WWW-Authenticate"); got != "Bearer" {
				t.Errorf("WWW-Authenticate = %q, want Bearer", got)
			}
			testapp.Problem(t, resp.HTTPResponse, resp.Body)
		})
	}
}

// wantStatus checks that an access token gets want on a secured operation of each kind.
func wantStatus(t *testing.T, a *testapp.App, what, token string, want int) {
	t.Helper()
	for _, r := range []struct{ method, path, body string }{
		{http.MethodGet, "/v1/me", ""},
		{http.MethodGet, "/v1/me/audit", ""},
		{http.MethodGet, "/v1/conversations", ""},
		{http.MethodGet, "/v1/models", ""},
		{http.MethodPost, "/v1/chat", `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`},
	} {
		req, _ := http.NewRequest(r.method, a.URL+r.path, strings.NewReader(r.body))
		req.Header.Set("Authorization", "Bearer "+token)
		if r.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := a.HTTPClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %s %s = %d %s, want %d", what, r.method, r.path, resp.StatusCode, body, want)
		} else if want == http.StatusUnauthorized && testapp.Problem(t, resp, body).Type != "urn:deepersensor:problem:unauthorized" {
			t.Errorf("%s: %s %s: the problem is not unauthorized: %s", what, r.method, r.path, body)
		}
	}
}

// countRows counts the rows of a query on the service's database.
func countRows(t *testing.T, a *testapp.App, query string, args ...any) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, a.Config.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestDeleteMe(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	email, first := a.NewUser(t)
	_, other := a.NewUser(t)
	ctx := context.Background()
	c := a.Client(t, testapp.Bearer(first.AccessToken))
	second, err := c.LoginWithResponse(ctx, client.Credentials{Email: email, Password: testapp.TestPassword})
	if err != nil || second.JSON200 == nil {
		t.Fatalf("second login: %v", err)
	}
	if chat, err := c.ChatWithResponse(ctx, client.ChatRequest{Model: "tiny", Messages: userMessage("hi")}); err != nil || chat.JSON200 == nil {
		t.Fatalf("chat: %v", err)
	}
	user := subject(t, first.AccessToken)

	wrong, err := c.DeleteMeWithResponse(ctx, client.DeleteAccountRequest{Password: "Not-The-Password-42"})
	if err != nil || wrong.StatusCode() != http.StatusUnauthorized {
		t.Fatalf("delete with a wrong password = %v %d, want 401", err, wrong.StatusCode())
	}
	if p := testapp.Problem(t, wrong.HTTPResponse, wrong.Body); p.Type != "urn:deepersensor:problem:invalid-credentials" {
		t.Errorf("wrong password problem type = %q", p.Type)
	}
	if missing, _ := c.DeleteMeWithBodyWithResponse(ctx, "application/json", strings.NewReader(`{}`)); missing.StatusCode() != http.StatusBadRequest {
		t.Errorf("delete without a password = %d, want 400", missing.StatusCode())
	}
	wantStatus(t, a, "after refused deletions", first.AccessToken, http.StatusOK)

	deleted, err := c.DeleteMeWithResponse(ctx, client.DeleteAccountRequest{Password: testapp.TestPassword})
	if err != nil || deleted.StatusCode() != http.StatusNoContent {
		t.Fatalf("delete = %v %d %s, want 204", err, deleted.StatusCode(), deleted.Body)
	}

	for _, pair := range []client.TokenPair{first, *second.JSON200} {
		wantStatus(t, a, "access token of a deleted account", pair.AccessToken, http.StatusUnauthorized)
		again, _ := a.Client(t, testapp.Bearer(pair.AccessToken)).DeleteMeWithResponse(ctx, client.DeleteAccountRequest{Password: testapp.TestPassword})
		if again.StatusCode() != http.StatusUnauthorized {
			t.Errorf("deleting again = %d, want 401", again.StatusCode())
		}
		if r, _ := c.RefreshWithResponse(ctx, client.RefreshRequest{RefreshToken: pair.RefreshToken}); r.StatusCode() != http.StatusUnauthorized {
			t.Errorf("refresh token of a deleted account = %d, want 401", r.StatusCode())
		}
	}
	if l, _ := c.LoginWithResponse(ctx, client.Credentials{Email: email, Password: testapp.TestPassword}); l.StatusCode() != http.StatusUnauthorized {
		t.Errorf("login to a deleted account = %d, want 401", l.StatusCode())
	}
	wantStatus(t, a, "another account", other.AccessToken, http.StatusOK)

	for what, query := range map[string]string{
		"account":        "SELECT count(*) FROM users WHERE id = $1",
		"conversations":  "SELECT count(*) FROM conversations WHERE user_id = $1",
		"refresh tokens": "SELECT count(*) FROM refresh_tokens WHERE user_id = $1",
		"audit events":   "SELECT count(*) FROM audit_log WHERE user_id = $1",
	} {
		if n := countRows(t, a, query, user); n != 0 {
			t.Errorf("%d %s of the deleted account remain", n, what)
		}
	}
	if n := countRows(t, a, "SELECT count(*) FROM messages"); n != 2 {
		t.Errorf("%d messages remain, want the other account's two", n)
	}
	// The signup, two logins and the refused deletion stay, without the user; the deletion is recorded.
	if n := countRows(t, a, "SELECT count(*) FROM audit_log WHERE user_id IS NULL AND event IN ('signup', 'login_success', 'account_deletion_failure')"); n != 4 {
		t.Errorf("%d of the deleted account's audit events were kept, want 4", n)
	}
	if n := countRows(t, a, "SELECT count(*) FROM audit_log WHERE user_id IS NULL AND event = 'account_deleted' AND request_id = $1", deleted.HTTPResponse.Header.Get("X-Request-ID")); n != 1 {
		t.Errorf("%d account_deleted events, want 1", n)
	}
}

func TestDeleteMeIsRateLimitedLikeLogin(t *testing.T) {
	for _, tt := range []struct {
		name      string
		configure func(*config.Config)
	}{
		// The signup and the login count too.
		{"per client address", func(c *config.Config) { c.RateLimitAuthIP = config.Rate{Limit: 3, Period: time.Minute} }},
		// The login counts too.
		{"per account email", func(c *config.Config) { c.RateLimitLoginEmail = config.Rate{Limit: 2, Period: time.Minute} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := testapp.Start(t, testapp.Options{Configure: tt.configure})
			_, tokens := a.NewUser(t)
			c := a.Client(t, testapp.Bearer(tokens.AccessToken))
			for i, want := range []int{http.StatusUnauthorized, http.StatusTooManyRequests} {
				resp, err := c.DeleteMeWithResponse(context.Background(), client.DeleteAccountRequest{Password: "guess-" + fmt.Sprint(i)})
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode() != want {
					t.Fatalf("guess %d = %d, want %d", i, resp.StatusCode(), want)
				}
				if want == http.StatusTooManyRequests {
					check429(t, resp.HTTPResponse, resp.Body)
				}
			}
		})
	}
}

func TestMyAuditEvents(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	email, tokens := a.NewUser(t) // signup, login_success
	a.NewUser(t)                  // someone else's events
	ctx := context.Background()
	hostile := "\xff\xfeagent/" + strings.Repeat("x", 60<<10)
	failed, err := a.Client(t).LoginWithResponse(ctx, client.Credentials{Email: email, Password: "Not-The-Password-42"},
		func(_ context.Context, req *http.Request) error {
			req.Header.Set("User-Agent", hostile)
			req.Header.Set("X-Request-ID", "audit-req-1")
			return nil
		})
	if err != nil || failed.StatusCode() != http.StatusUnauthorized {
		t.Fatalf("failed login = %v %d", err, failed.StatusCode())
	}

	c := a.Client(t, testapp.Bearer(tokens.AccessToken))
	var got []client.AuditEvent
	var cursor *string
	for range 3 {
		limit := 2
		page, err := c.ListMyAuditEventsWithResponse(ctx, &client.ListMyAuditEventsParams{Limit: &limit, Cursor: cursor})
		if err != nil || page.JSON200 == nil {
			t.Fatalf("audit page = %v %s", err, page.Body)
		}
		got = append(got, page.JSON200.Items...)
		if cursor = page.JSON200.NextCursor; cursor == nil {
			break
		}
	}
	var names []string
	for _, e := range got {
		names = append(names, e.Event)
	}
	if strings.Join(names, ",") != "login_failure,login_success,signup" {
		t.Fatalf("events = %v, want the user's own three, newest first", names)
	}
	f := got[0]
	want := "\uFFFDagent/" + strings.Repeat("x", 512-len("\uFFFDagent/"))
	if f.UserAgent != want || f.RequestId != "audit-req-1" || f.Ip != "127.0.0.1" || f.CreatedAt.IsZero() {
		t.Errorf("failed login event = %q from %s (request %s), want the User-Agent as valid UTF-8 of 512 bytes", f.UserAgent, f.Ip, f.RequestId)
	}

	garbage := "garbage!"
	bad, err := c.ListMyAuditEventsWithResponse(ctx, &client.ListMyAuditEventsParams{Cursor: &garbage})
	if err != nil || bad.StatusCode() != http.StatusBadRequest {
		t.Errorf("a cursor the API never issued = %v %d, want 400", err, bad.StatusCode())
	}
}

func TestEmailWithNUL(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	c := a.Client(t)
	ctx := context.Background()
	body := `{"email":"ada\u0000@example.com","password":"password-1"}`
	signup, err := c.SignupWithBodyWithResponse(ctx, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	login, err := c.LoginWithBodyWithResponse(ctx, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		what string
		resp *http.Response
		body []byte
	}{{"signup", signup.HTTPResponse, signup.Body}, {"login", login.HTTPResponse, login.Body}} {
		if r.resp.StatusCode != http.StatusUnprocessableEntity {
			t.Errorf("%s with a NUL in the email = %d %s, want 422", r.what, r.resp.StatusCode, r.body)
			continue
		}
		if p := testapp.Problem(t, r.resp, r.body); p.Errors == nil || (*p.Errors)[0].Field != "email" {
			t.Errorf("%s: problem %+v does not name the email", r.what, p)
		}
	}
}

func TestRefreshFamilyMaxAge(t *testing.T) {
	const maxAge = 2 * time.Second
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.RefreshFamilyMaxAge = maxAge }})
	_, tokens := a.NewUser(t)
	start := time.Now() // the family started at the login, before this
	c := a.Client(t)
	ctx := context.Background()
	rotated, err := c.RefreshWithResponse(ctx, client.RefreshRequest{RefreshToken: tokens.RefreshToken})
	if err != nil || rotated.JSON200 == nil {
		t.Fatalf("refresh within the family's age = %v %d", err, rotated.StatusCode())
	}
	time.Sleep(time.Until(start.Add(maxAge + 100*time.Millisecond)))
	late, err := c.RefreshWithResponse(ctx, client.RefreshRequest{RefreshToken: rotated.JSON200.RefreshToken})
	if err != nil || late.StatusCode() != http.StatusUnauthorized {
		t.Fatalf("refresh of a family past DS_REFRESH_FAMILY_MAX_AGE = %v %d, want 401", err, late.StatusCode())
	}
}

// startTwoInstances starts two instances on one database and one Redis.
func startTwoInstances(t *testing.T) (one, two *testapp.App) {
	t.Helper()
	prefix := "test:" + strings.ToLower(rand.Text()) + ":"
	one = testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.RedisURL, c.RedisKeyPrefix = redisURL(), prefix }})
	two = testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		c.RedisURL, c.RedisKeyPrefix, c.DatabaseURL = redisURL(), prefix, one.Config.DatabaseURL
	}})
	return one, two
}

// wantEnded checks that a bearer token (an access token or an API key) is refused on the instance that
// ended it at once, and on the other within the time a pub/sub message takes.
func wantEnded(t *testing.T, what, token string, here, there *testapp.App) {
	t.Helper()
	wantStatus(t, here, what+", on the instance that ended it", token, http.StatusUnauthorized)
	start := time.Now()
	for {
		resp, err := there.Client(t).GetMeWithResponse(context.Background(), testapp.Bearer(token))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() == http.StatusUnauthorized {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("%s: still accepted on the other instance after 1s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%s: refused on the other instance after %v", what, time.Since(start))
	wantStatus(t, there, what+", on the other instance", token, http.StatusUnauthorized)
}

// TestRevocationOnTwoInstances runs two instances on one database and one Redis: logging out, reusing a
// refresh token and deleting the account on one end the access tokens on both, at once.
func TestRevocationOnTwoInstances(t *testing.T) {
	one, two := startTwoInstances(t)
	ctx := context.Background()

	email, logout := one.NewUser(t)
	wantStatus(t, two, "a live token on the other instance", logout.AccessToken, http.StatusOK)
	if r, err := one.Client(t).LogoutWithResponse(ctx, client.RefreshRequest{RefreshToken: logout.RefreshToken}); err != nil || r.StatusCode() != http.StatusNoContent {
		t.Fatalf("logout = %v", err)
	}
	wantEnded(t, "logout", logout.AccessToken, one, two)

	reused, err := two.Client(t).LoginWithResponse(ctx, client.Credentials{Email: email, Password: testapp.TestPassword})
	if err != nil || reused.JSON200 == nil {
		t.Fatalf("login: %v", err)
	}
	for range 2 { // the second refresh reuses the token
		if _, err := two.Client(t).RefreshWithResponse(ctx, client.RefreshRequest{RefreshToken: reused.JSON200.RefreshToken}); err != nil {
			t.Fatal(err)
		}
	}
	wantEnded(t, "refresh-token reuse", reused.JSON200.AccessToken, two, one)

	live, err := one.Client(t).LoginWithResponse(ctx, client.Credentials{Email: email, Password: testapp.TestPassword})
	if err != nil || live.JSON200 == nil {
		t.Fatalf("login: %v", err)
	}
	del, err := one.Client(t, testapp.Bearer(live.JSON200.AccessToken)).DeleteMeWithResponse(ctx, client.DeleteAccountRequest{Password: testapp.TestPassword})
	if err != nil || del.StatusCode() != http.StatusNoContent {
		t.Fatalf("delete = %v %d", err, del.StatusCode())
	}
	wantEnded(t, "account deletion", live.JSON200.AccessToken, one, two)
}
