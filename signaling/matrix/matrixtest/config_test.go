package matrixtest

import (
	"reflect"
	"testing"
)

func TestSetKey(t *testing.T) {
	for _, tc := range []struct {
		key     string
		wantErr string
	}{
		{key: "global.server_name"},
		{key: "client_api.rate_limiting.enabled"},
		{key: "logging"},
		{key: "client_api.rate_limits.enabled", wantErr: `dendrite.yaml: no section "client_api.rate_limits"`},
		{key: "global.server_name.x", wantErr: `dendrite.yaml: no section "global.server_name"`},
		{key: "global.servername", wantErr: `dendrite.yaml: no key "global.servername"`},
	} {
		doc := map[string]any{
			"global":     map[string]any{"server_name": "localhost"},
			"client_api": map[string]any{"rate_limiting": map[string]any{"enabled": true}},
			"logging":    []any{},
		}
		err := setKey(doc, tc.key, "new")
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("setKey(%q) = %v, want %q", tc.key, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("setKey(%q) = %v", tc.key, err)
			continue
		}
		var got any = doc
		for _, p := range splitKey(tc.key) {
			got = got.(map[string]any)[p]
		}
		if !reflect.DeepEqual(got, "new") {
			t.Errorf("after setKey(%q) the value is %v, want new", tc.key, got)
		}
	}
}
