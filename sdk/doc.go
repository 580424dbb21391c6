// Package sdk is the Go client of a DeeperSensor server: accounts and sessions, models, chat (whole or
// streamed) and stored conversations. It wraps the generated client in gen/client, whose types it uses,
// and adds what the generated code lacks: a session that refreshes itself, errors that carry the server's
// problem details, and chat streams read event by event.
//
// Quick start:
//
//	c, err := sdk.New("http://127.0.0.1:8080")
//	if err != nil {
//		return err
//	}
//	if err := c.Login(ctx, "ada@example.com", "correct horse battery staple"); err != nil {
//		return err // an *sdk.Error, such as "401 Unauthorized: invalid email or password (request …)"
//	}
//	req := client.ChatRequest{Model: "llama3.2", Messages: []client.ChatMessageInput{{Role: client.RoleUser, Content: "Hi!"}}}
//	for ev, err := range c.ChatStream(ctx, req) {
//		if err != nil {
//			return err
//		}
//		if d, ok := ev.(sdk.Delta); ok {
//			fmt.Print(d.Content)
//		}
//	}
//
// Sessions: Login keeps the token pair. Every call sends the access token; when it is about to expire, or
// a call is answered 401, the Client exchanges the single-use refresh token for a new pair once, even for
// many concurrent calls, and retries. Tokens and SetTokens save and resume a session, and the OnTokens
// option reports each new pair so that a program can persist it.
//
// API keys: a Client made WithAPIKey sends the key (ds_...) instead, needs no Login and never refreshes,
// so a 401 is final. CreateAPIKey, APIKeys and DeleteAPIKey manage a user's keys.
//
// Errors: every answer outside 2xx becomes an *Error holding the status and the decoded
// application/problem+json body; IsNotFound and IsUnauthorized cover the common checks.
//
// Anything not wrapped here is reachable through API, the generated client, which sends the same session's
// access token.
package sdk
