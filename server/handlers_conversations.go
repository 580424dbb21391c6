package server

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/store"
)

// defaultPageSize is the page size when the client names none (the contract's default).
const defaultPageSize = 20

// ListConversations implements GET /v1/conversations with keyset pagination.
func (s *Server) ListConversations(ctx context.Context, req apiserver.ListConversationsRequestObject) (apiserver.ListConversationsResponseObject, error) {
	limit := defaultPageSize
	if req.Params.Limit != nil {
		limit = *req.Params.Limit
	}
	var after *store.ConversationCursor
	if req.Params.Cursor != nil {
		c, ok := decodeCursor(*req.Params.Cursor)
		if !ok {
			return nil, &problemError{status: http.StatusBadRequest, slug: "invalid-request", detail: "cursor: is not a cursor from this API",
				fields: []apiserver.FieldError{{Field: "cursor", Message: "is not a cursor from this API"}}}
		}
		after = &c
	}
	// One more than asked tells whether another page exists.
	convs, err := s.chat.Conversations(ctx, userID(ctx), after, int32(limit+1))
	if err != nil {
		return nil, err
	}
	page := apiserver.ListConversations200JSONResponse{Items: make([]apiserver.Conversation, 0, limit)}
	if len(convs) > limit {
		convs = convs[:limit]
		last := convs[limit-1]
		next := encodeCursor(store.ConversationCursor{UpdatedAt: last.UpdatedAt, ID: last.ID})
		page.NextCursor = &next
	}
	for _, c := range convs {
		page.Items = append(page.Items, toAPIConversation(c))
	}
	return page, nil
}

// GetConversation implements GET /v1/conversations/{id}.
func (s *Server) GetConversation(ctx context.Context, req apiserver.GetConversationRequestObject) (apiserver.GetConversationResponseObject, error) {
	conv, msgs, err := s.chat.Conversation(ctx, req.Id, userID(ctx))
	if err != nil {
		return nil, err
	}
	out := apiserver.GetConversation200JSONResponse{
		Id: conv.ID, Title: conv.Title, Model: conv.Model, CreatedAt: conv.CreatedAt, UpdatedAt: conv.UpdatedAt,
		Messages: make([]apiserver.Message, len(msgs)),
	}
	for i, m := range msgs {
		out.Messages[i] = apiserver.Message{
			Id: m.ID, Role: apiserver.Role(m.Role), Content: m.Content, Status: apiserver.MessageStatus(m.Status), CreatedAt: m.CreatedAt,
		}
		if m.Usage != nil {
			out.Messages[i].Usage = &apiserver.Usage{PromptTokens: int(m.Usage.PromptTokens), CompletionTokens: int(m.Usage.CompletionTokens)}
		}
	}
	return out, nil
}

// UpdateConversation implements PATCH /v1/conversations/{id}.
func (s *Server) UpdateConversation(ctx context.Context, req apiserver.UpdateConversationRequestObject) (apiserver.UpdateConversationResponseObject, error) {
	title := strings.TrimSpace(req.Body.Title)
	if title == "" {
		return nil, &problemError{status: http.StatusUnprocessableEntity, slug: "unprocessable", detail: "title: must not be blank",
			fields: []apiserver.FieldError{{Field: "title", Message: "must not be blank"}}}
	}
	conv, err := s.chat.Rename(ctx, req.Id, userID(ctx), title)
	if err != nil {
		return nil, err
	}
	return apiserver.UpdateConversation200JSONResponse(toAPIConversation(conv)), nil
}

// DeleteConversation implements DELETE /v1/conversations/{id}.
func (s *Server) DeleteConversation(ctx context.Context, req apiserver.DeleteConversationRequestObject) (apiserver.DeleteConversationResponseObject, error) {
	if err := s.chat.Delete(ctx, req.Id, userID(ctx)); err != nil {
		return nil, err
	}
	return apiserver.DeleteConversation204Response{}, nil
}

func toAPIConversation(c store.Conversation) apiserver.Conversation {
	return apiserver.Conversation{Id: c.ID, Title: c.Title, Model: c.Model, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

// encodeCursor makes the opaque next_cursor: the last item's activity time and id.
func encodeCursor(c store.ConversationCursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.UpdatedAt.UTC().Format(time.RFC3339Nano) + "|" + c.ID.String()))
}

func decodeCursor(s string) (store.ConversationCursor, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return store.ConversationCursor{}, false
	}
	ts, id, ok := strings.Cut(string(raw), "|")
	if !ok {
		return store.ConversationCursor{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return store.ConversationCursor{}, false
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return store.ConversationCursor{}, false
	}
	return store.ConversationCursor{UpdatedAt: t, ID: u}, true
}
