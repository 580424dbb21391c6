package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

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
		{"password of 8 multibyte characters is fine in length", `{"email":"c@example.com","password":"ééééééé"}`, "", http.StatusBadRequest, "password"},
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
		slicesSort(times)
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
		"iss": a.Config.JWTIssuer, "aud": a.Config.JWTAudience, "sub": userID,
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
		tok.Header["kid"] = kid(secret)
		s, err := tok.SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	none := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, valid)
		tok.Header["kid"] = kid(testapp.TestJWTSecret)
		s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
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
