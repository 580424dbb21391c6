package core

import (
	"encoding/base64"
	"strconv"
	"strings"
	"unicode/utf8"
)

// PositionCursor encodes a position in an ordered list, such as a row's id or sequence number, as the opaque
// cursor that clients pass back for the next page.
func PositionCursor(pos int64) string {
	return base64.RawURLEncoding.EncodeToString(strconv.AppendInt(nil, pos, 10))
}

// ParsePositionCursor decodes a PositionCursor. Anything else is a Malformed error naming field.
func ParsePositionCursor(field, cursor string) (int64, error) {
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err == nil {
		if pos, err := strconv.ParseInt(string(raw), 10, 64); err == nil && pos > 0 {
			return pos, nil
		}
	}
	return 0, badCursor(field)
}

// TextCursor encodes a position in a list ordered by a text key, such as a lower-cased email, as an opaque
// cursor.
func TextCursor(key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(key))
}

// ParseTextCursor decodes a TextCursor: a key that PostgreSQL can compare, not empty, valid UTF-8 and
// without NUL. Anything else is a Malformed error naming field.
func ParseTextCursor(field, cursor string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if key := string(raw); err == nil && key != "" && utf8.ValidString(key) && !strings.ContainsRune(key, 0) {
		return key, nil
	}
	return "", badCursor(field)
}

// badCursor is the error for a cursor that this API did not make.
func badCursor(field string) *Error {
	return &Error{Code: Malformed, Field: field, Message: "is not a cursor from this API"}
}
