package server

import (
	"context"
	"time"

	"github.com/google/uuid"
	openapi_types "github.com/oapi-codegen/runtime/types"

	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/usage"
)

// GetUsage implements GET /v1/usage: the caller's own calls.
func (s *Server) GetUsage(ctx context.Context, req apiserver.GetUsageRequestObject) (apiserver.GetUsageResponseObject, error) {
	p := req.Params
	report, err := s.usageReport(ctx, userID(ctx), p.From, p.To, (*string)(p.GroupBy))
	if err != nil {
		return nil, err
	}
	return apiserver.GetUsage200JSONResponse(report), nil
}

// GetAdminUsage implements GET /v1/admin/usage: everybody's calls. guardAdminRoute lets only admins here.
func (s *Server) GetAdminUsage(ctx context.Context, req apiserver.GetAdminUsageRequestObject) (apiserver.GetAdminUsageResponseObject, error) {
	p := req.Params
	report, err := s.usageReport(ctx, uuid.Nil, p.From, p.To, (*string)(p.GroupBy))
	if err != nil {
		return nil, err
	}
	return apiserver.GetAdminUsage200JSONResponse(report), nil
}

// usageReport sums the calls of a user, or everybody's for uuid.Nil, over a period, by day unless groupBy
// says otherwise.
func (s *Server) usageReport(ctx context.Context, user uuid.UUID, from, to *openapi_types.Date, groupBy *string) (apiserver.UsageReport, error) {
	req := usage.ReportRequest{UserID: user, GroupBy: usage.ByDay}
	if from != nil {
		req.From = &from.Time
	}
	if to != nil {
		req.To = &to.Time
	}
	if groupBy != nil {
		req.GroupBy = usage.Grouping(*groupBy)
	}
	report, err := s.usage.Report(ctx, req)
	if err != nil {
		return apiserver.UsageReport{}, err
	}
	out := apiserver.UsageReport{
		From: toAPIDate(report.From), To: toAPIDate(report.To), Items: make([]apiserver.UsageTotal, len(report.Totals)),
	}
	for i, t := range report.Totals {
		item := apiserver.UsageTotal{Requests: t.Requests, PromptTokens: t.PromptTokens, CompletionTokens: t.CompletionTokens}
		switch req.GroupBy {
		case usage.ByDay:
			d := toAPIDate(t.Day)
			item.Day = &d
		case usage.ByModel:
			item.Model = &t.Model
		case usage.ByUser:
			item.UserId = &t.UserID
		}
		out.Items[i] = item
	}
	return out, nil
}

func toAPIDate(t time.Time) openapi_types.Date { return openapi_types.Date{Time: t} }
