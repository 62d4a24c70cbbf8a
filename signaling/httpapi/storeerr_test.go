package httpapi

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/icebox-voip/icebox/signaling"
)

// TestStoreUnavailableIs503: a database that went away (store/postgres
// wraps its connection errors in signaling.ErrStoreUnavailable) answers 503
// with a code the client can retry on, not 500 internal.
func TestStoreUnavailableIs503(t *testing.T) {
	err := fmt.Errorf("store: update call %q: %w: %w", "k", signaling.ErrStoreUnavailable, fmt.Errorf("conn closed"))
	ae := asAPIError(err)
	if ae.Status != http.StatusServiceUnavailable || ae.Code != "store_unavailable" {
		t.Errorf("got %d %q, want 503 store_unavailable", ae.Status, ae.Code)
	}
}
