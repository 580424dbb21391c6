package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/golang-jwt/jwt/v5"

	contract "github.com/deepersensor/deepersensor/api"
	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/sse"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// TestContractAttack reads every operation from the contract and, in the spirit of Schemathesis, first sends
// each operation's own example and expects its documented success, then sends requests that break the
// operation's contract, generated from its schemas: each required field missing, each property with a wrong
// type, an unknown enum value, a string or array one past its limit, a number out of range, malformed JSON,
// a wrong Content-Type, an empty or oversized body, bad path and query parameters, and no, expired or
// malformed bearer tokens. Every answer must be documented for its operation and match the contract; every
// broken request must get a 4xx problem+json; no request may get a 5xx.
func TestContractAttack(t *testing.T) {
	a := startContractApp(t)
	// The contract as written: the spec embedded in gen/apiserver has its operationIds capitalized.
	spec, err := openapi3.NewLoader().LoadFromData(contract.OpenAPIYAML)
	if err != nil {
		t.Fatalf("load api/openapi.yaml: %v", err)
	}
	ops := contractOperations(spec)
	sent := 0

	t.Run("examples", func(t *testing.T) {
		sent += sendExamples(t, a, ops, nil)
	})

	// An admin, so that the attacks on the admin routes reach their handlers; TestAdminRoutesDoNotExistForNonAdmins
	// attacks them as a user.
	email, tokens := a.NewUser(t)
	setRole(t, a, email, auth.RoleAdmin)
	fixtures := attackFixtures{
		token:        tokens.AccessToken,
		expiredToken: expiredToken(t, tokens.AccessToken),
		paramValues:  map[string]string{"id": newConversation(t, a, spec, tokens.AccessToken)},
		bodyLimit:    a.Config.BodyLimit,
	}
	for _, op := range ops {
		for _, atk := range op.attacks(t, fixtures) {
			t.Run(op.ID+"/"+atk.name, func(t *testing.T) {
				sent++
				resp, body := send(t, a, atk.request)
				switch {
				case resp.StatusCode >= 500:
					t.Errorf("%s: %d %s", atk.request, resp.StatusCode, body)
				case atk.broken && resp.StatusCode < 400:
					t.Errorf("%s: %d %s, want a 4xx", atk.request, resp.StatusCode, body)
				}
				if resp.StatusCode >= 400 && op.answersProblems() {
					testapp.Problem(t, resp, body)
				}
				if atk.status != 0 && resp.StatusCode != atk.status {
					t.Errorf("%s: %d %s, want %d", atk.request, resp.StatusCode, body, atk.status)
				}
			})
		}
	}
	t.Logf("sent %d requests for %d operations", sent, len(ops))
}

// startContractApp starts the service for the contract's examples: the fake model server serves the model
// they name, and no rate limit gets in the way.
func startContractApp(t *testing.T) *testapp.App {
	t.Helper()
	// The contract's chat examples name llama3.2:latest, so the fake serves that model.
	model := ollamatest.Tiny()
	model.Name = "llama3.2:latest"
	return testapp.Start(t, testapp.Options{
		Ollama: ollamatest.Options{Models: []ollamatest.Model{model}},
		Configure: func(c *config.Config) {
			unlimited := config.Rate{Limit: 1_000_000, Period: time.Minute}
			c.RateLimitAuthIP, c.RateLimitLoginEmail, c.RateLimitUser, c.RateLimitChat = unlimited, unlimited, unlimited, unlimited
		},
	})
}

// operation is one operation of the contract, with what the attacks need to know about it.
type operation struct {
	ID        string
	Method    string
	Path      string // the template, such as /v1/conversations/{id}
	Op        *openapi3.Operation
	Params    openapi3.Parameters // of the path item and the operation
	Secured   bool
	Body      *openapi3.Schema // the JSON request body, if any
	Example   any              // the JSON request body's example
	Successes []int            // documented 2xx statuses
}

// answersProblems reports whether the operation documents its errors as problem+json. The compatible APIs
// document error bodies of their own, which the contract's check of every answer covers.
func (o operation) answersProblems() bool {
	for code, resp := range o.Op.Responses.Map() {
		if strings.HasPrefix(code, "4") && resp.Value.Content.Get("application/problem+json") != nil {
			return true
		}
	}
	return false
}

// contractOperations lists the contract's operations in an order in which their examples work: signup
// before login, login before refresh, chat (which creates a conversation) before the conversation routes,
// listUsers (which finds a user) before the routes of one user, and deletions last.
func contractOperations(spec *openapi3.T) []operation {
	var ops []operation
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			o := operation{ID: op.OperationID, Method: method, Path: path, Op: op}
			o.Params = append(slices.Clone(item.Parameters), op.Parameters...)
			security := spec.Security
			if op.Security != nil {
				security = *op.Security
			}
			o.Secured = len(security) > 0
			if op.RequestBody != nil {
				if media := op.RequestBody.Value.Content.Get("application/json"); media != nil {
					o.Body, o.Example = media.Schema.Value, media.Example
				}
			}
			for code := range op.Responses.Map() {
				if status, err := strconv.Atoi(code); err == nil && status >= 200 && status < 300 {
					o.Successes = append(o.Successes, status)
				}
			}
			ops = append(ops, o)
		}
	}
	rank := func(o operation) int {
		switch {
		case o.ID == "signup":
			return 0
		case o.ID == "login":
			return 1
		case o.ID == "refresh":
			return 2
		case o.ID == "chat", o.ID == "listUsers":
			return 3
		case o.Method == http.MethodDelete:
			return 5
		}
		return 4
	}
	sort.Slice(ops, func(i, j int) bool {
		if ri, rj := rank(ops[i]), rank(ops[j]); ri != rj {
			return ri < rj
		}
		return ops[i].Path+ops[i].Method < ops[j].Path+ops[j].Method
	})
	return ops
}

// sendExamples sends every operation's example request as the contract gives it and checks that it gets a
// documented success status. Path parameters come from the parameter's example or, for the conversation id,
// from the conversation the chat example creates (for the API key id, from the key the createAPIKey example
// creates, and for the user id, from the listUsers example); secured operations send the access token of the
// login example, whose user is made an admin after the signup example. The one change to an
// example: refresh sends the refresh token that login returned, since the example's token is a placeholder.
// bearer, when not nil, turns that access token into the token secured operations send, such as an API key
// of its user. It returns how many requests it sent.
func sendExamples(t *testing.T, a *testapp.App, ops []operation, bearer func(access string) string) int {
	var access, refresh string
	params := map[string]string{}
	for _, op := range ops {
		body := op.Example
		if op.ID == "refresh" {
			if refresh == "" {
				t.Fatal("refresh: login did not run first")
			}
			body = map[string]any{"refresh_token": refresh}
		}
		req := request{method: op.Method, path: op.Path, header: http.Header{}}
		for _, p := range op.Params {
			value := paramExample(p.Value)
			if value == "" {
				value = params[objectParam(op.Path, p.Value.Name)]
			}
			if value == "" {
				if p.Value.Required {
					t.Fatalf("%s: no value for parameter %s: give it an example in the contract", op.ID, p.Value.Name)
				}
				continue
			}
			req = req.withParam(p.Value, value)
		}
		if body != nil {
			req = req.withJSON(body)
		}
		if op.Secured {
			token := access
			if bearer != nil {
				token = bearer(access)
			}
			req.header.Set("Authorization", "Bearer "+token)
		}
		resp, raw := send(t, a, req)
		if !slices.Contains(op.Successes, resp.StatusCode) {
			t.Fatalf("%s example %s: %d %s, want one of %v", op.ID, req, resp.StatusCode, raw, op.Successes)
		}
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			events, err := sse.ReadAll(bytes.NewReader(raw))
			if err != nil || len(events) == 0 || events[len(events)-1].Type != "done" {
				t.Errorf("%s example: the stream did not end with a done event (%v): %s", op.ID, err, raw)
			}
			for _, ev := range events {
				testapp.CheckEvent(t, ev)
			}
		}
		switch op.ID {
		case "signup":
			// The example user is an admin, so that the admin routes' examples succeed too.
			setRole(t, a, body.(map[string]any)["email"].(string), auth.RoleAdmin)
		case "login":
			var pair struct {
				AccessToken  string `json:"access_token"`
				RefreshToken string `json:"refresh_token"`
			}
			decodeJSON(t, raw, &pair)
			access, refresh = pair.AccessToken, pair.RefreshToken
		case "chat":
			var result struct {
				ConversationID string `json:"conversation_id"`
			}
			decodeJSON(t, raw, &result)
			params["/v1/conversations/{id}"] = result.ConversationID
		case "createAPIKey":
			var key struct {
				ID string `json:"id"`
			}
			decodeJSON(t, raw, &key)
			params["/v1/api-keys/{id}"] = key.ID
		case "listUsers":
			var page struct {
				Items []struct {
					ID string `json:"id"`
				} `json:"items"`
			}
			decodeJSON(t, raw, &page)
			params["/v1/admin/users/{id}"] = page.Items[0].ID
		}
	}
	return len(ops)
}

// objectParam is the key of path parameter name of path in the values that earlier examples found: the path
// up to the parameter, such as /v1/conversations/{id}, so that the ids of different objects do not mix.
func objectParam(path, name string) string {
	i := strings.Index(path, "{"+name+"}")
	if i < 0 {
		return name
	}
	return path[:i+len(name)+2]
}

// paramExample is the example of a parameter or of its schema, as it goes in a URL; "" when there is none.
func paramExample(p *openapi3.Parameter) string {
	ex := p.Example
	if ex == nil && p.Schema != nil {
		ex = p.Schema.Value.Example
	}
	if ex == nil {
		return ""
	}
	return fmt.Sprint(ex)
}

// newConversation creates a conversation with the chat example and returns its id.
func newConversation(t *testing.T, a *testapp.App, spec *openapi3.T, token string) string {
	t.Helper()
	example := spec.Paths.Find("/v1/chat").Post.RequestBody.Value.Content.Get("application/json").Example
	req := request{method: http.MethodPost, path: "/v1/chat", header: http.Header{}}.withJSON(example)
	req.header.Set("Authorization", "Bearer "+token)
	resp, body := send(t, a, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	var result struct {
		ConversationID string `json:"conversation_id"`
	}
	decodeJSON(t, body, &result)
	return result.ConversationID
}

// expiredToken re-signs a real access token with the test secret, an hour past its expiry, so that only
// its expiry is wrong.
func expiredToken(t *testing.T, access string) string {
	t.Helper()
	claims := jwt.MapClaims{}
	parsed, _, err := jwt.NewParser().ParseUnverified(access, claims)
	if err != nil {
		t.Fatalf("parse access token: %v", err)
	}
	past := time.Now().Add(-time.Hour)
	claims["iat"], claims["nbf"], claims["exp"] = past.Add(-15*time.Minute).Unix(), past.Add(-15*time.Minute).Unix(), past.Unix()
	expired := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	expired.Header["kid"] = parsed.Header["kid"]
	signed, err := expired.SignedString([]byte(testapp.TestJWTSecret))
	if err != nil {
		t.Fatalf("sign expired token: %v", err)
	}
	return signed
}

// attackFixtures are the valid parts of the attacks' requests.
type attackFixtures struct {
	token        string            // a valid access token
	expiredToken string            // the same, expired
	paramValues  map[string]string // path parameter values that name existing objects, by name
	bodyLimit    int64             // the server's largest body
}

// attack is a request that breaks one rule of an operation's contract.
type attack struct {
	name    string
	request request
	broken  bool // the request breaks the contract, so it must get a 4xx
	status  int  // when not zero, the one status it must get
}

// valid is a request that keeps the operation's contract: its parameters from f or their examples, its
// body's example, and f's token when the operation is secured.
func (o operation) valid(f attackFixtures) request {
	base := request{method: o.Method, path: o.Path, header: http.Header{}}
	for _, p := range o.Params {
		value := f.paramValues[p.Value.Name]
		if value == "" {
			value = paramExample(p.Value)
		}
		if value != "" || p.Value.Required {
			base = base.withParam(p.Value, value)
		}
	}
	if o.Body != nil {
		base = base.withJSON(o.Example)
	}
	if o.Secured {
		base.header.Set("Authorization", "Bearer "+f.token)
	}
	return base
}

// attacks generates the operation's attacks from its parameters, its request body schema and its security.
func (o operation) attacks(t *testing.T, f attackFixtures) []attack {
	t.Helper()
	base := o.valid(f)
	var out []attack
	add := func(name string, req request, broken bool) {
		out = append(out, attack{name: name, request: req, broken: broken})
	}

	for _, p := range o.Params {
		param := p.Value
		for _, bad := range badParamValues(param.Schema.Value) {
			name := param.In + ":" + param.Name + "=" + bad.label
			switch {
			case param.In == openapi3.ParameterInPath && bad.value == "":
				// An empty path segment leaves the route rather than breaking the parameter.
			case param.In == openapi3.ParameterInPath, param.In == openapi3.ParameterInQuery:
				add(name, base.withParam(param, bad.value), true)
			}
		}
		if param.In == openapi3.ParameterInQuery && param.Schema.Value.Type.Is(openapi3.TypeString) {
			// Valid for the schema but meaningless to the server, such as a cursor it never issued.
			add("query:"+param.Name+"=garbage", base.withParam(param, "garbage!"), false)
		}
	}

	if o.Body != nil {
		for _, m := range bodyMutations(t, o.Body, o.Example) {
			add("body:"+m.label, base.withJSON(m.value), true)
		}
		for _, raw := range []struct{ label, body, contentType string }{
			{"malformed-json", `{"model": "llama3.2:latest", "messages": [`, "application/json"},
			{"trailing-garbage", string(mustJSON(t, o.Example)) + "}", "application/json"},
			{"empty", "", "application/json"},
			{"text-plain", string(mustJSON(t, o.Example)), "text/plain"},
			{"form", "a=b", "application/x-www-form-urlencoded"},
			{"no-content-type", string(mustJSON(t, o.Example)), ""},
		} {
			add("body:"+raw.label, base.withRaw(raw.body, raw.contentType), true)
		}
		huge := `{"pad":"` + strings.Repeat("a", int(f.bodyLimit)) + `"}`
		out = append(out, attack{name: "body:over-limit", request: base.withRaw(huge, "application/json"),
			broken: true, status: http.StatusRequestEntityTooLarge})
	}

	if o.Secured {
		for _, auth := range []struct{ label, header string }{
			{"none", ""},
			{"expired", "Bearer " + f.expiredToken},
			{"malformed", "Bearer not-a-jwt"},
			{"tampered", "Bearer " + f.token[:len(f.token)-4] + "AAAA"},
			{"basic", "Basic dXNlcjpwYXNz"},
		} {
			req := base.clone()
			req.header.Del("Authorization")
			if auth.header != "" {
				req.header.Set("Authorization", auth.header)
			}
			out = append(out, attack{name: "auth:" + auth.label, request: req, broken: true, status: http.StatusUnauthorized})
		}
	}
	return out
}

// labeled is a value with a name for the test's output.
type labeled[V any] struct {
	label string
	value V
}

// oracle is how the attacks decide that a value breaks a schema: kin-openapi's validator, with formats
// checked too, so that "not-a-uuid" counts as broken.
var oracle = []openapi3.SchemaValidationOption{
	openapi3.EnableFormatValidation(),
	openapi3.WithStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC4122)),
	openapi3.MultiErrors(),
}

// breaks reports whether the JSON value v does not match schema.
func breaks(schema *openapi3.Schema, v any) bool {
	return schema.VisitJSON(v, oracle...) != nil
}

// badValues proposes values that may break schema as a JSON value: each other type, an unknown enum value,
// strings, arrays and numbers just past their limits, pattern and format violations and unknown properties.
// Only those that really break it are returned.
func badValues(schema *openapi3.Schema) []labeled[any] {
	candidates := []labeled[any]{
		{"type-string", "x"}, {"type-number", 12.5}, {"type-integer", 7.0}, {"type-boolean", true},
		{"type-object", map[string]any{}}, {"type-array", []any{}}, {"type-null", nil},
	}
	if len(schema.Enum) > 0 {
		candidates = append(candidates, labeled[any]{"enum-unknown", "not-in-the-enum"})
	}
	if schema.MaxLength != nil {
		candidates = append(candidates, labeled[any]{"too-long", strings.Repeat("a", int(*schema.MaxLength)+1)})
	}
	if schema.MinLength > 0 {
		candidates = append(candidates, labeled[any]{"too-short", strings.Repeat("a", int(schema.MinLength)-1)})
	}
	if schema.Pattern != "" {
		for _, s := range []string{"-leading-dash", "space in it", "semi;colon", "ünïcode", "<script>"} {
			candidates = append(candidates, labeled[any]{"pattern:" + s, s})
		}
	}
	if schema.Format != "" {
		candidates = append(candidates, labeled[any]{"format-" + schema.Format, "not-a-" + schema.Format})
	}
	step := 1.0
	if !schema.Type.Is(openapi3.TypeInteger) {
		step = 0.5
	}
	if schema.Min != nil {
		candidates = append(candidates, labeled[any]{"below-minimum", *schema.Min - step})
	}
	if schema.Max != nil {
		candidates = append(candidates, labeled[any]{"above-maximum", *schema.Max + step})
	}
	if schema.Items != nil {
		item := sample(schema.Items.Value)
		if schema.MaxItems != nil {
			candidates = append(candidates, labeled[any]{"too-many-items", repeat(item, int(*schema.MaxItems)+1)})
		}
		if schema.MinItems > 0 {
			candidates = append(candidates, labeled[any]{"too-few-items", repeat(item, int(schema.MinItems)-1)})
		}
	}
	if schema.AdditionalProperties.Has != nil && !*schema.AdditionalProperties.Has {
		obj, _ := sample(schema).(map[string]any)
		if obj != nil {
			obj["unexpected_property"] = 1.0
			candidates = append(candidates, labeled[any]{"unknown-property", obj})
		}
	}
	var out []labeled[any]
	for _, c := range candidates {
		if breaks(schema, c.value) {
			out = append(out, c)
		}
	}
	return out
}

// badParamValues proposes parameter values, as they go in a URL, that break schema: the bad JSON values that
// are scalars, a value that does not parse as the schema's type, and a very long one.
func badParamValues(schema *openapi3.Schema) []labeled[string] {
	var candidates []labeled[string]
	for _, v := range badValues(schema) {
		switch v.value.(type) {
		case string, float64, bool:
			candidates = append(candidates, labeled[string]{v.label, fmt.Sprint(v.value)})
		}
	}
	candidates = append(candidates, labeled[string]{"not-a-number", "abc"}, labeled[string]{"very-long", strings.Repeat("a", 1000)})
	var out []labeled[string]
	seen := map[string]bool{}
	for _, c := range candidates {
		if !seen[c.value] && paramBreaks(schema, c.value) {
			seen[c.value] = true
			out = append(out, c)
		}
	}
	return out
}

// paramBreaks reports whether the URL value s does not match schema once parsed as its type.
func paramBreaks(schema *openapi3.Schema, s string) bool {
	var v any = s
	switch {
	case schema.Type.Is(openapi3.TypeInteger):
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return true
		}
		v = float64(n)
	case schema.Type.Is(openapi3.TypeNumber):
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return true
		}
		v = n
	case schema.Type.Is(openapi3.TypeBoolean):
		b, err := strconv.ParseBool(s)
		if err != nil {
			return true
		}
		v = b
	}
	return breaks(schema, v)
}

// bodyMutations walks schema alongside the example body and returns bodies that each break one rule at one
// place: the whole body replaced by a bad value, each required property removed, and each property, at any
// depth, replaced by a bad value. Optional properties missing from the example are first given a valid
// sample so that their own rules are broken too. Every body returned breaks the schema.
func bodyMutations(t *testing.T, schema *openapi3.Schema, example any) []labeled[any] {
	t.Helper()
	root := roundTrip(t, example)
	var out []labeled[any]
	emit := func(label string, body any) {
		body = roundTrip(t, body)
		if breaks(schema, body) {
			out = append(out, labeled[any]{label, body})
		}
	}
	var walk func(root any, s *openapi3.Schema, ptr []string)
	walk = func(root any, s *openapi3.Schema, ptr []string) {
		at := "/" + strings.Join(ptr, "/")
		for _, bad := range badValues(s) {
			emit(at+":"+bad.label, setAt(deepCopy(root), ptr, bad.value))
		}
		schemas := append([]*openapi3.Schema{s}, subSchemas(s.AllOf)...)
		if obj, ok := getAt(root, ptr).(map[string]any); ok {
			for _, sub := range schemas {
				for _, name := range sub.Required {
					if _, present := obj[name]; present {
						emit(childPointer(at, name)+":missing", deleteAt(deepCopy(root), append(slices.Clone(ptr), name)))
					}
				}
				for _, name := range sortedKeys(sub.Properties) {
					prop := sub.Properties[name].Value
					child := append(slices.Clone(ptr), name)
					next := root
					if _, present := obj[name]; !present {
						next = setAt(deepCopy(root), child, sample(prop))
					}
					walk(next, prop, child)
				}
			}
		}
		if s.Items != nil {
			if arr, ok := getAt(root, ptr).([]any); ok {
				next := root
				if len(arr) == 0 {
					next = setAt(deepCopy(root), ptr, []any{sample(s.Items.Value)})
				}
				walk(next, s.Items.Value, append(slices.Clone(ptr), "0"))
			}
		}
	}
	walk(root, schema, nil)
	return out
}

// childPointer joins a JSON pointer and a property name.
func childPointer(at, name string) string {
	return strings.TrimSuffix(at, "/") + "/" + name
}

// subSchemas resolves a list of schema references.
func subSchemas(refs openapi3.SchemaRefs) []*openapi3.Schema {
	out := make([]*openapi3.Schema, len(refs))
	for i, r := range refs {
		out[i] = r.Value
	}
	return out
}

// sample makes a valid value for schema: its example or default, or the least value of its type that
// meets its limits.
func sample(s *openapi3.Schema) any {
	switch {
	case s.Example != nil:
		return s.Example
	case s.Default != nil:
		return s.Default
	case len(s.Enum) > 0:
		return s.Enum[0]
	case s.Type.Is(openapi3.TypeObject) || len(s.Properties) > 0 || len(s.AllOf) > 0:
		obj := map[string]any{}
		for _, sub := range append([]*openapi3.Schema{s}, subSchemas(s.AllOf)...) {
			for _, name := range sub.Required {
				obj[name] = sample(sub.Properties[name].Value)
			}
		}
		return obj
	case s.Type.Is(openapi3.TypeArray):
		return repeat(sample(s.Items.Value), max(int(s.MinItems), 1))
	case s.Type.Is(openapi3.TypeInteger), s.Type.Is(openapi3.TypeNumber):
		if s.Min != nil {
			return *s.Min
		}
		if s.Max != nil {
			return math.Min(*s.Max, 1)
		}
		return 1.0
	case s.Type.Is(openapi3.TypeBoolean):
		return true
	case s.Format == "uuid":
		return "00000000-0000-4000-8000-000000000000"
	}
	return strings.Repeat("a", max(int(s.MinLength), 1))
}

// repeat returns a slice of n copies of v.
func repeat(v any, n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// sortedKeys returns a schema's property names in order, so the attacks come in the same order each run.
func sortedKeys(props openapi3.Schemas) []string {
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// getAt returns the value at a JSON pointer (as its parts) in v, or nil.
func getAt(v any, ptr []string) any {
	for _, part := range ptr {
		switch c := v.(type) {
		case map[string]any:
			v = c[part]
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i >= len(c) {
				return nil
			}
			v = c[i]
		default:
			return nil
		}
	}
	return v
}

// setAt sets the value at a JSON pointer in root, whose parents must exist, and returns the new root.
func setAt(root any, ptr []string, value any) any {
	if len(ptr) == 0 {
		return value
	}
	switch parent := getAt(root, ptr[:len(ptr)-1]).(type) {
	case map[string]any:
		parent[ptr[len(ptr)-1]] = value
	case []any:
		i, _ := strconv.Atoi(ptr[len(ptr)-1])
		parent[i] = value
	}
	return root
}

// deleteAt removes the property at a JSON pointer in root and returns root.
func deleteAt(root any, ptr []string) any {
	if parent, ok := getAt(root, ptr[:len(ptr)-1]).(map[string]any); ok {
		delete(parent, ptr[len(ptr)-1])
	}
	return root
}

// deepCopy copies a decoded JSON value.
func deepCopy(v any) any {
	switch c := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(c))
		for k, e := range c {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(c))
		for i, e := range c {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// roundTrip turns v into what encoding/json decodes it to, the form the validator expects.
func roundTrip(t *testing.T, v any) any {
	t.Helper()
	var out any
	decodeJSON(t, mustJSON(t, v), &out)
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode %v: %v", v, err)
	}
	return b
}

func decodeJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

// request is an HTTP request under construction; its methods return changed copies.
type request struct {
	method     string
	path       string            // the operation's path template
	pathParams map[string]string // the values of its {parameters}
	query      url.Values
	header     http.Header
	body       []byte
}

func (r request) clone() request {
	r.pathParams, r.query = maps.Clone(r.pathParams), cloneValues(r.query)
	r.header, r.body = r.header.Clone(), bytes.Clone(r.body)
	return r
}

func cloneValues(v url.Values) url.Values {
	if v == nil {
		return nil
	}
	return url.Values(http.Header(v).Clone())
}

// withParam sets a path or query parameter.
func (r request) withParam(p *openapi3.Parameter, value string) request {
	r = r.clone()
	switch p.In {
	case openapi3.ParameterInPath:
		if r.pathParams == nil {
			r.pathParams = map[string]string{}
		}
		r.pathParams[p.Name] = value
	case openapi3.ParameterInQuery:
		if r.query == nil {
			r.query = url.Values{}
		}
		r.query.Set(p.Name, value)
	}
	return r
}

// withJSON sets a JSON body.
func (r request) withJSON(v any) request {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode body %v: %v", v, err))
	}
	return r.withRaw(string(b), "application/json")
}

// withRaw sets a body and its Content-Type; an empty contentType sends none.
func (r request) withRaw(body, contentType string) request {
	r = r.clone()
	r.body = []byte(body)
	r.header.Del("Content-Type")
	if contentType != "" {
		r.header.Set("Content-Type", contentType)
	}
	return r
}

// target is the request's path, with its parameters escaped, and query.
func (r request) target() string {
	path := r.path
	for name, value := range r.pathParams {
		path = strings.ReplaceAll(path, "{"+name+"}", url.PathEscape(value))
	}
	if len(r.query) == 0 {
		return path
	}
	return path + "?" + r.query.Encode()
}

// String describes the request for failure messages, shortening a long body.
func (r request) String() string {
	body := string(r.body)
	if len(body) > 300 {
		body = body[:300] + fmt.Sprintf("… (%d bytes)", len(r.body))
	}
	auth := r.header.Get("Authorization")
	if len(auth) > 20 {
		auth = auth[:20] + "…"
	}
	return fmt.Sprintf("%s %s [Content-Type %q, Authorization %q] %s", r.method, r.target(), r.header.Get("Content-Type"), auth, body)
}

// send sends r with a client that checks the answer against the contract, and returns the answer with its
// body read.
func send(t *testing.T, a *testapp.App, r request) (*http.Response, []byte) {
	t.Helper()
	return sendWith(t, a.HTTPClient(t), a, r)
}

// sendWith sends r with c, and returns the answer with its body read.
func sendWith(t *testing.T, c *http.Client, a *testapp.App, r request) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(r.method, a.URL+r.target(), bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	req.Header = r.header.Clone()
	if len(r.body) == 0 {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: read answer: %v", r, err)
	}
	return resp, body
}
