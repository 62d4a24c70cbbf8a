package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// bodyReadTimeout bounds how long a request body may take to arrive.
const bodyReadTimeout = 30 * time.Second

// decodeBody reads one JSON object into v: at most limit bytes, no unknown
// fields, nothing after it. Every failure is a 4xx that says what is wrong.
func decodeBody(c echo.Context, limit int64, v any) error {
	// Only headers have a server-wide timeout (a WebSocket must not get a
	// read deadline), so bodies get theirs here: no trickling a body forever.
	_ = http.NewResponseController(c.Response()).SetReadDeadline(time.Now().Add(bodyReadTimeout)) // unsupported writers just keep no deadline
	r := http.MaxBytesReader(c.Response(), c.Request().Body, limit)
	data, err := io.ReadAll(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apiError(http.StatusRequestEntityTooLarge, "too_large",
				fmt.Sprintf("request body is larger than %d bytes", limit))
		}
		return apiError(http.StatusBadRequest, "invalid_json", "cannot read the request body")
	}
	return decodeJSON(data, v)
}

// decodeJSON decodes one JSON object strictly (also for WebSocket commands).
func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return apiError(http.StatusBadRequest, "invalid_json", "the request body is empty")
		case errors.As(err, &se):
			return apiError(http.StatusBadRequest, "invalid_json", fmt.Sprintf("invalid JSON at byte %d", se.Offset))
		case errors.As(err, &te):
			return apiError(http.StatusBadRequest, "invalid_json", fmt.Sprintf("field %s: expected %s", te.Field, te.Type))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return apiError(http.StatusBadRequest, "unknown_field", strings.TrimPrefix(err.Error(), "json: "))
		default:
			return apiError(http.StatusBadRequest, "invalid_json", "invalid JSON")
		}
	}
	if dec.More() {
		return apiError(http.StatusBadRequest, "invalid_json", "unexpected data after the JSON object")
	}
	return nil
}

// decodeOptionalBody is decodeBody for requests whose body may be empty
// (reject, hangup).
func decodeOptionalBody(c echo.Context, limit int64, v any) error {
	if c.Request().ContentLength == 0 {
		return nil
	}
	err := decodeBody(c, limit, v)
	var ae *Error
	if errors.As(err, &ae) && ae.Message == "the request body is empty" {
		return nil
	}
	return err
}
