package server_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// kid is the key id the server derives from a secret.
func kid(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:8])
}

// subject reads the sub claim of a token without verifying it.
func subject(tb testing.TB, token string) string {
	tb.Helper()
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		tb.Fatalf("parse token: %v", err)
	}
	sub, _ := claims["sub"].(string)
	return sub
}

// tamper changes the payload of a token and keeps its signature.
func tamper(token string) string {
	parts := strings.Split(token, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	payload = []byte(strings.Replace(string(payload), `"iss":"`, `"iss":"x`, 1))
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	return strings.Join(parts, ".")
}
