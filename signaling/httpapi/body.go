package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

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
	return checkFields(data, reflect.TypeOf(v), "")
}

// checkFields walks data, which decoded into a value of type t without
// error, for what encoding/json lets through silently: an object key that
// matches a field only case-insensitively (it would fill the field, though
// "unknown fields are refused"), and a string that is not valid UTF-8 or
// holds a lone surrogate escape (it would become U+FFFD, changing an SDP
// behind its sender's back). The error names the field. The walk only
// re-reads what the decode accepted, and request types are shallow.
func checkFields(data []byte, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case '"':
		return checkStrings(data, path)
	case '{':
		if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
			return checkStrings(data, path)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(data, &obj); err != nil {
			return nil // unreachable: it decoded before
		}
		fields := jsonFields(t)
		for k, raw := range obj {
			ft, ok := fields[k]
			if !ok {
				return apiError(http.StatusBadRequest, "unknown_field",
					fmt.Sprintf("unknown field %q (names are case-sensitive)", join(path, k)))
			}
			if err := checkFields(raw, ft, join(path, k)); err != nil {
				return err
			}
		}
		return nil
	case '[':
		var elems []json.RawMessage
		if err := json.Unmarshal(data, &elems); err != nil {
			return nil // unreachable: it decoded before
		}
		var et reflect.Type
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			et = t.Elem()
		}
		for i, raw := range elems {
			p := fmt.Sprintf("%s[%d]", path, i)
			if et == nil {
				if err := checkStrings(raw, p); err != nil {
					return err
				}
			} else if err := checkFields(raw, et, p); err != nil {
				return err
			}
		}
		return nil
	default: // number, true, false, null
		return nil
	}
}

// checkStrings checks every string in data (keys too): a string field, or
// a value whose keys are not fields (a map, an interface, a type with its
// own UnmarshalJSON).
func checkStrings(data []byte, path string) error {
	if !validJSONString(data) {
		name := path
		if name == "" {
			name = "the request body"
		}
		return apiError(http.StatusBadRequest, "invalid_request", name+" is not valid UTF-8")
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// jsonFields maps the JSON names of struct type t's fields, those of
// embedded structs included (as encoding/json promotes them), to their
// types. A name of the outer struct wins over an embedded one.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	var embedded []reflect.Type
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		if f.Anonymous && name == "" {
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = ft
	}
	for _, et := range embedded {
		for name, ft := range jsonFields(et) {
			if _, ok := out[name]; !ok {
				out[name] = ft
			}
		}
	}
	return out
}

// validJSONString reports whether raw JSON text is valid UTF-8 and has no
// \u escape of a lone UTF-16 surrogate. raw has been decoded already, so
// every escape is well formed.
func validJSONString(raw []byte) bool {
	if !utf8.Valid(raw) {
		return false
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++
		if i >= len(raw) || raw[i] != 'u' || i+4 >= len(raw) {
			continue // a one-character escape, skipped whole
		}
		r := hex4(raw[i+1 : i+5])
		i += 4
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return false // a low surrogate first
		case r >= 0xD800 && r <= 0xDBFF:
			if i+6 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
				return false
			}
			if lo := hex4(raw[i+3 : i+7]); lo < 0xDC00 || lo > 0xDFFF {
				return false
			}
			i += 6
		}
	}
	return true
}

// hex4 decodes four hex digits (already checked by the JSON decoder).
func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
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
