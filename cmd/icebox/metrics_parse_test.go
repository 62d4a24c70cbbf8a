package main

import (
	"maps"
	"strings"
	"testing"
)

// TestMetricSamples: the samples of a text exposition are keyed by their
// series as printed, the keys the end-to-end tests look up.
func TestMetricSamples(t *testing.T) {
	const text = `# HELP icebox_turn_relayed_packets_total Packets relayed.
# TYPE icebox_turn_relayed_packets_total counter
icebox_turn_relayed_packets_total{direction="from_peer"} 3
icebox_turn_relayed_packets_total{direction="to_peer"} 4
# TYPE icebox_matrix_inbound_total counter
icebox_matrix_inbound_total{result="ok",type="m.call.invite"} 1
# TYPE icebox_matrix_outbox_depth gauge
icebox_matrix_outbox_depth 0
# TYPE icebox_http_request_duration_seconds histogram
icebox_http_request_duration_seconds_bucket{route="/x",le="0.5"} 1
icebox_http_request_duration_seconds_bucket{route="/x",le="+Inf"} 2
icebox_http_request_duration_seconds_sum{route="/x"} 1.25
icebox_http_request_duration_seconds_count{route="/x"} 2
`
	got, err := metricSamples(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`icebox_turn_relayed_packets_total{direction="from_peer"}`:          3,
		`icebox_turn_relayed_packets_total{direction="to_peer"}`:            4,
		`icebox_matrix_inbound_total{result="ok",type="m.call.invite"}`:     1,
		`icebox_matrix_outbox_depth`:                                        0,
		`icebox_http_request_duration_seconds_bucket{route="/x",le="0.5"}`:  1,
		`icebox_http_request_duration_seconds_bucket{route="/x",le="+Inf"}`: 2,
		`icebox_http_request_duration_seconds_sum{route="/x"}`:              1.25,
		`icebox_http_request_duration_seconds_count{route="/x"}`:            2,
	}
	if !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got, want := sum(got, "icebox_turn_relayed_packets_total"), 7.0; got != want {
		t.Errorf("sum: got %v, want %v", got, want)
	}
	if _, err := metricSamples(strings.NewReader("icebox_x{ 1\n")); err == nil {
		t.Error("a broken exposition: want an error")
	}
}
