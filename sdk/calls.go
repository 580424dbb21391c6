package sdk

import (
	"context"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/gen/client"
)

// Me returns the logged-in user's account.
func (c *Client) Me(ctx context.Context) (client.User, error) {
	resp, err := c.do(ctx, func(auth client.RequestEditorFn) (*http.Response, error) {
		return c.raw.GetMe(ctx, auth)
	})
	return decode[client.User](resp, err, http.StatusOK)
}

// Models lists the models the server's provider serves.
func (c *Client) Models(ctx context.Context) ([]client.ModelInfo, error) {
	resp, err := c.do(ctx, func(auth client.RequestEditorFn) (*http.Response, error) {
		return c.raw.ListModels(ctx, auth)
	})
	list, err := decode[client.ModelList](resp, err, http.StatusOK)
	return list.Models, err
}

// Model describes one model, such as "tiny:latest".
func (c *Client) Model(ctx context.Context, name string) (client.ModelDetails, error) {
	resp, err := c.do(ctx, func(auth client.RequestEditorFn) (*http.Response, error) {
		return c.raw.GetModel(ctx, name, auth)
	})
	return decode[client.ModelDetails](resp, err, http.StatusOK)
}

// Chat sends one turn and waits for the model's whole answer. Without req.ConversationId it starts a new
// conversation; the answer names it.
func (c *Client) Chat(ctx context.Context, req client.ChatRequest) (client.ChatResult, error) {
	resp, err := c.do(ctx, func(auth client.RequestEditorFn) (*http.Response, error) {
		return c.raw.Chat(ctx, req, auth)
	})
	return decode[client.ChatResult](resp, err, http.StatusOK)
}

// Conversations returns one page of the user's conversations, most recently active first. A limit of zero
// means the server's default; cursor is empty for the first page and the previous page's NextCursor after.
func (c *Client) Conversations(ctx context.Context, limit int, cursor string) (client.ConversationPage, error) {
	var params client.ListConversationsParams
	if limit != 0 {
		params.Limit = &limit
	}
	if cursor != "" {
		params.Cursor = &cursor
	}
	resp, err := c.do(ctx, func(auth client.RequestEditorFn) (*http.Response, error) {
		return c.raw.ListConversations(ctx, &params, auth)
	})
	return decode[client.ConversationPage](resp, err, http.StatusOK)
}

// Conversation returns one conversation with its messages.
func (c *Client) Conversation(ctx context.Context, id uuid.UUID) (client.ConversationDetail, error) {
	resp, err := c.do(ctx, func(auth client.RequestEditorFn) (*http.Response, error) {
		return c.raw.GetConversation(ctx, id, auth)
	})
	return decode[client.ConversationDetail](resp, err, http.StatusOK)
}

// RenameConversation sets a conversation's title and returns the renamed conversation.
func (c *Client) RenameConversation(ctx context.Context, id uuid.UUID, title string) (client.Conversation, error) {
	resp, err := c.do(ctx, func(auth client.RequestEditorFn) (*http.Response, error) {
		return c.raw.UpdateConversation(ctx, id, client.ConversationUpdate{Title: title}, auth)
	})
	return decode[client.Conversation](resp, err, http.StatusOK)
}

// DeleteConversation deletes a conversation and its messages.
func (c *Client) DeleteConversation(ctx context.Context, id uuid.UUID) error {
	resp, err := c.do(ctx, func(auth client.RequestEditorFn) (*http.Response, error) {
		return c.raw.DeleteConversation(ctx, id, auth)
	})
	return expectNoContent(resp, err)
}

// CreateAPIKey makes an API key named for what it is for, which works until expiresAt (never, when nil).
// The answer's Secret is the key, shown this once: keep it, and pass it to WithAPIKey.
func (c *Client) CreateAPIKey(ctx context.Context, name string, expiresAt *time.Time) (client.CreatedAPIKey, error) {
	resp, err := c.do(ctx, func(auth client.RequestEditorFn) (*http.Response, error) {
		return c.raw.CreateAPIKey(ctx, client.NewAPIKey{Name: name, ExpiresAt: expiresAt}, auth)
	})
	return decode[client.CreatedAPIKey](resp, err, http.StatusCreated)
}

// APIKeys lists the user's API keys, newest first, without their secrets.
func (c *Client) APIKeys(ctx context.Context) ([]client.APIKey, error) {
	resp, err := c.do(ctx, func(auth client.RequestEditorFn) (*http.Response, error) {
		return c.raw.ListAPIKeys(ctx, auth)
	})
	list, err := decode[client.APIKeyList](resp, err, http.StatusOK)
	return list.Items, err
}

// DeleteAPIKey revokes an API key; it stops working at once.
func (c *Client) DeleteAPIKey(ctx context.Context, id uuid.UUID) error {
	resp, err := c.do(ctx, func(auth client.RequestEditorFn) (*http.Response, error) {
		return c.raw.DeleteAPIKey(ctx, id, auth)
	})
	return expectNoContent(resp, err)
}
