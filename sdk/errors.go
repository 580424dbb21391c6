package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/deepersensor/deepersensor/gen/client"
)

// Error is an error answer from the server: every non-2xx response, and the error event that ends a failed
// chat stream. Use errors.As to reach it, or IsNotFound and IsUnauthorized to branch on the common cases.
type Error struct {
	// Status is the HTTP status code, such as 404.
	Status int
	// Problem is the decoded problem+json body. When the body was not one, such as a proxy's HTML page,
	// Title is the status text and Detail the start of the body.
	Problem client.Problem
}

// Error returns one line: the status, its title, the detail and the request id, such as
// "404 Not Found: conversation not found (request 01JD6Q4Y2M3N4P5Q6R7S8T9V0W)".
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", e.Status, e.Problem.Title)
	if e.Problem.Detail != "" {
		b.WriteString(": " + e.Problem.Detail)
	}
	if e.Problem.RequestId != "" {
		b.WriteString(" (request " + e.Problem.RequestId + ")")
	}
	return b.String()
}

// IsNotFound reports whether err is a 404 answer: the object does not exist or is not yours.
func IsNotFound(err error) bool { return hasStatus(err, http.StatusNotFound) }

// IsUnauthorized reports whether err is a 401 answer: the credentials are wrong, or the session ended and
// the user must log in again.
func IsUnauthorized(err error) bool { return hasStatus(err, http.StatusUnauthorized) }

func hasStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// errorFrom turns a non-2xx response into an *Error, consuming and closing its body.
func errorFrom(resp *http.Response) error {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Status: resp.StatusCode}
	if json.Unmarshal(body, &e.Problem) != nil {
		e.Problem = client.Problem{Detail: firstLine(string(body), 200)}
	}
	if e.Problem.Status == 0 {
		e.Problem.Status = resp.StatusCode
	}
	if e.Problem.Title == "" {
		e.Problem.Title = http.StatusText(resp.StatusCode)
	}
	if e.Problem.RequestId == "" {
		e.Problem.RequestId = resp.Header.Get("X-Request-ID")
	}
	return e
}

// firstLine returns the first non-blank line of s, cut to at most n bytes.
func firstLine(s string, n int) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "")
	}
	return s
}
