package server

import (
	"context"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/gen/apiserver"
)

// defaultPageSize is the page size when the client names none (the contract's default).
const defaultPageSize = 20

// pageParams returns the page size and cursor of a keyset-paginated list: the defaults when not given.
func pageParams(limit *int, cursor *string) (int, string) {
	size, after := defaultPageSize, ""
	if limit != nil {
		size = *limit
	}
	if cursor != nil {
		after = *cursor
	}
	return size, after
}

// ListConversations implements GET /v1/conversations with keyset pagination.
func (s *Server) ListConversations(ctx context.Context, req apiserver.ListConversationsRequestObject) (apiserver.ListConversationsResponseObject, error) {
	limit, cursor := pageParams(req.Params.Limit, req.Params.Cursor)
	page, err := s.chat.Conversations(ctx, userID(ctx), cursor, limit)
	if err != nil {
		return nil, err
	}
	out := apiserver.ListConversations200JSONResponse{Items: make([]apiserver.Conversation, len(page.Conversations))}
	for i, c := range page.Conversations {
		out.Items[i] = toAPIConversation(c)
	}
	out.NextCursor = cursorOrNil(page.Next)
	return out, nil
}

// GetConversation implements GET /v1/conversations/{id}.
func (s *Server) GetConversation(ctx context.Context, req apiserver.GetConversationRequestObject) (apiserver.GetConversationResponseObject, error) {
	conv, page, err := s.chat.Conversation(ctx, req.Id, userID(ctx))
	if err != nil {
		return nil, err
	}
	return apiserver.GetConversation200JSONResponse{
		Id: conv.ID, Title: conv.Title, Model: conv.Model, CreatedAt: conv.CreatedAt, UpdatedAt: conv.UpdatedAt,
		Messages: toAPIMessages(page.Messages), OlderCursor: cursorOrNil(page.Older),
	}, nil
}

// ListMessages implements GET /v1/conversations/{id}/messages.
func (s *Server) ListMessages(ctx context.Context, req apiserver.ListMessagesRequestObject) (apiserver.ListMessagesResponseObject, error) {
	limit, before := chat.NewestMessages, ""
	if req.Params.Limit != nil {
		limit = *req.Params.Limit
	}
	if req.Params.Before != nil {
		before = *req.Params.Before
	}
	page, err := s.chat.Messages(ctx, req.Id, userID(ctx), before, limit)
	if err != nil {
		return nil, err
	}
	return apiserver.ListMessages200JSONResponse{Items: toAPIMessages(page.Messages), OlderCursor: cursorOrNil(page.Older)}, nil
}

func toAPIMessages(msgs []chat.Message) []apiserver.Message {
	out := make([]apiserver.Message, len(msgs))
	for i, m := range msgs {
		out[i] = apiserver.Message{
			Id: m.ID, Role: apiserver.Role(m.Role), Content: m.Content, Status: apiserver.MessageStatus(m.Status), CreatedAt: m.CreatedAt,
		}
		if m.Usage != nil {
			out[i].Usage = &apiserver.Usage{PromptTokens: m.Usage.PromptTokens, CompletionTokens: m.Usage.CompletionTokens}
		}
	}
	return out
}

// cursorOrNil is the contract's nullable cursor: null when there is no further page.
func cursorOrNil(cursor string) *string {
	if cursor == "" {
		return nil
	}
	return &cursor
}

// UpdateConversation implements PATCH /v1/conversations/{id}.
func (s *Server) UpdateConversation(ctx context.Context, req apiserver.UpdateConversationRequestObject) (apiserver.UpdateConversationResponseObject, error) {
	conv, err := s.chat.Rename(ctx, req.Id, userID(ctx), req.Body.Title)
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

func toAPIConversation(c chat.Conversation) apiserver.Conversation {
	return apiserver.Conversation{Id: c.ID, Title: c.Title, Model: c.Model, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}
