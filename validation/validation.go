// Package validation holds the error that names the input field a request got wrong. The services return it
// and server renders it as a 422 problem that names the field.
package validation

// Error says which input field is unacceptable and why.
type Error struct {
	Field   string
	Message string
}

// Error implements error.
func (e *Error) Error() string { return e.Field + ": " + e.Message }

// New returns an Error for field.
func New(field, message string) *Error { return &Error{Field: field, Message: message} }
