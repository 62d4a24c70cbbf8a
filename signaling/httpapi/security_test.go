package httpapi

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSecurityMetricLabels: no request, authenticated or not, can add a
// series to the HTTP metrics. Made-up methods and paths share fixed label
// values ("other", "unmatched"), so their number does not matter.
func TestSecurityMetricLabels(t *testing.T) {
	e := newAPIEnv(t)
	names := []string{"icebox_http_requests_total", "icebox_http_request_duration_seconds"}
	count := func() int {
		t.Helper()
		n, err := testutil.GatherAndCount(e.reg, names...)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// One request of each shape first, so that every fixed label value the
	// attack can reach exists before the count.
	send := func(i int) {
		t.Helper()
		for _, r := range []struct{ method, path, token string }{
			{fmt.Sprintf("X%dMETHOD", i), "/healthz", ""},
			{fmt.Sprintf("X%dMETHOD", i), fmt.Sprintf("/no/such/path/%d", i), ""},
			{"GET", fmt.Sprintf("/made-up-%d", i), ""},
			{"GET", fmt.Sprintf("/made-up-%d", i), userToken("alice")},
			{fmt.Sprintf("Y%d", i), fmt.Sprintf("/calls/%d/answer", i), userToken("alice")},
			{"GET", fmt.Sprintf("/ui/x%d", i), ""},
		} {
			if code, body := e.do(t, r.token, r.method, r.path, nil); code < 400 {
				t.Fatalf("%s %s: %d %s, want an error", r.method, r.path, code, body)
			}
		}
	}
	send(0)
	before := count()
	const rounds = 200
	for i := 1; i <= rounds; i++ {
		send(i)
	}
	after := count()
	t.Logf("HTTP metric series: %d before, %d after %d rounds of made-up methods and paths", before, after, rounds)
	if after != before {
		t.Errorf("series grew from %d to %d with made-up methods and paths", before, after)
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, m := range []string{"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "other"} {
		known[m] = true
	}
	var bad []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" && !known[l.GetValue()] {
					bad = append(bad, l.GetValue())
				}
			}
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d series with a method label outside the fixed set, e.g. %q", len(bad), bad[:min(len(bad), 3)])
	}
}
