package server

import (
	"context"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/deepersensor/deepersensor/chat"
)

// quotaHeader carries the caller's tokens left today on the answers of model calls.
const quotaHeader = "X-Quota-Day-Remaining"

// responseHeaderKey is the context key of the response's header map.
type responseHeaderKey struct{}

// modelCallHeaders puts the response's header map in the context of model calls, so that their handlers
// can set X-Quota-Day-Remaining once the call's tokens are reserved, whichever response type then writes
// the answer.
func modelCallHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if modelOperations[operationID(c)] {
			req := c.Request()
			c.SetRequest(req.WithContext(context.WithValue(req.Context(), responseHeaderKey{}, c.Response().Header())))
		}
		return next(c)
	}
}

// noteQuotaLeft sets X-Quota-Day-Remaining on the response of a model call when a day quota applies to
// the caller.
func noteQuotaLeft(ctx context.Context, left chat.QuotaLeft) {
	if h, ok := ctx.Value(responseHeaderKey{}).(http.Header); ok && left.Applies {
		h.Set(quotaHeader, strconv.FormatInt(left.Tokens, 10))
	}
}
