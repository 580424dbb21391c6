package server

import (
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/oapi-codegen/runtime"
)

// validatedBinder gives the handlers the request body that the contract's validator checked: the value it
// decoded, bound with member names matched exactly. encoding/json matches them case-insensitively, so a second
// decode of the body would take {"Messages": ...} beside the validated {"messages": ...}, past every rule of
// the contract; and the body is not decoded twice.
type validatedBinder struct{}

// Bind binds the validated body into i; a request the validator did not see (no body, or a route it skips)
// has its body decoded as Echo's default binder does, without path and query parameters.
func (validatedBinder) Bind(i any, c echo.Context) error {
	body, ok := c.Request().Body.(interface{ ValidatedValue() any })
	if !ok {
		return (&echo.DefaultBinder{}).BindBody(c, i)
	}
	if err := runtime.BindJSONValue(body.ValidatedValue(), i); err != nil {
		// Such as 1.0 for an integer, which the contract's validator lets through.
		return echo.NewHTTPError(http.StatusBadRequest, "the body does not fit the request's fields").SetInternal(err)
	}
	return nil
}
