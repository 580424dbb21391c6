package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/deepersensor/deepersensor/sdk"
)

// credentials is the saved session, in <user config dir>/deepersensor/credentials.json.
type credentials struct {
	Server string       `json:"server"`
	Email  string       `json:"email"`
	Tokens sdk.TokenSet `json:"tokens"`
}

// configDir is os.UserConfigDir, reading the environment given to run.
func configDir(getenv func(string) string) (string, error) {
	switch runtime.GOOS {
	case "windows":
		if dir := getenv("AppData"); dir != "" {
			return dir, nil
		}
		return "", errors.New("%AppData% is not set")
	case "darwin", "ios":
		if home := getenv("HOME"); home != "" {
			return filepath.Join(home, "Library", "Application Support"), nil
		}
		return "", errors.New("$HOME is not set")
	}
	if dir := getenv("XDG_CONFIG_HOME"); filepath.IsAbs(dir) {
		return dir, nil
	}
	if home := getenv("HOME"); home != "" {
		return filepath.Join(home, ".config"), nil
	}
	return "", errors.New("neither $XDG_CONFIG_HOME nor $HOME is set")
}

// credentialsPath returns where the session is kept.
func (c *cli) credentialsPath() (string, error) {
	dir, err := configDir(c.getenv)
	if err != nil {
		return "", fmt.Errorf("find the config directory: %w", err)
	}
	return filepath.Join(dir, "deepersensor", "credentials.json"), nil
}

// loadCredentials reads the saved session; it wraps fs.ErrNotExist when there is none.
func (c *cli) loadCredentials() (credentials, error) {
	var creds credentials
	path, err := c.credentialsPath()
	if err != nil {
		return creds, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return creds, err
	}
	if err := json.Unmarshal(b, &creds); err != nil {
		return creds, fmt.Errorf("read %s: %w", path, err)
	}
	return creds, nil
}

// saveCredentials replaces the saved session atomically, readable by the user only.
func (c *cli) saveCredentials(creds credentials) error {
	path, err := c.credentialsPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(creds, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".credentials-*.json") // mode 0600
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}

// removeCredentials forgets the saved session.
func (c *cli) removeCredentials() error {
	path, err := c.credentialsPath()
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// newClient returns an SDK client for the server that saves every new session of email.
func (c *cli) newClient(email string) (*sdk.Client, error) {
	server := c.server
	return sdk.New(server, sdk.WithUserAgent("dsctl"), sdk.OnTokens(func(ts sdk.TokenSet) {
		var err error
		if ts == (sdk.TokenSet{}) {
			err = c.removeCredentials()
		} else {
			err = c.saveCredentials(credentials{Server: server, Email: email, Tokens: ts})
		}
		if err != nil {
			fmt.Fprintf(c.stderr, "warning: could not save the session: %v\n", err)
		}
	}))
}

// session returns a client that uses the API key in DS_API_KEY or, without one, the saved session for the
// server.
func (c *cli) session() (*sdk.Client, error) {
	if key := c.getenv("DS_API_KEY"); key != "" {
		return sdk.New(c.server, sdk.WithUserAgent("dsctl"), sdk.WithAPIKey(key))
	}
	creds, err := c.loadCredentials()
	if errors.Is(err, fs.ErrNotExist) || (err == nil && creds.Server != c.server) {
		return nil, fmt.Errorf("not logged in to %s; log in with: dsctl login", c.server)
	}
	if err != nil {
		return nil, err
	}
	sess, err := c.newClient(creds.Email)
	if err != nil {
		return nil, err
	}
	sess.SetTokens(creds.Tokens)
	return sess, nil
}
