package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBandwidthLimits(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "icebox.yaml")
	for _, tc := range []struct {
		name, yaml string
		env        []string
		want       Quotas // the bandwidth fields
		wantErr    []string
	}{
		{name: "default: unlimited", want: Quotas{BandwidthBurst: 500 * time.Millisecond}},
		{
			name: "from the file",
			yaml: "turn: {quotas: {max_bps_per_allocation: 2000000, max_bps_per_user: 3000000, max_bps_total: 100000000, bandwidth_burst: 200ms}}",
			want: Quotas{MaxBPSPerAllocation: 2_000_000, MaxBPSPerUser: 3_000_000, MaxBPSTotal: 100_000_000, BandwidthBurst: 200 * time.Millisecond},
		},
		{
			name: "from the environment",
			env:  []string{"ICEBOX_TURN_QUOTAS_MAX_BPS_PER_USER=1000000", "ICEBOX_TURN_QUOTAS_BANDWIDTH_BURST=1s"},
			want: Quotas{MaxBPSPerUser: 1_000_000, BandwidthBurst: time.Second},
		},
		{
			name: "negative limits",
			yaml: "turn: {quotas: {max_bps_per_allocation: -1, max_bps_per_user: -5, max_bps_total: -1000}}",
			wantErr: []string{
				"turn.quotas.max_bps_per_allocation: must be >= 0 bits per second, 0 for unlimited (got -1)",
				"turn.quotas.max_bps_per_user: must be >= 0 bits per second, 0 for unlimited (got -5)",
				"turn.quotas.max_bps_total: must be >= 0 bits per second, 0 for unlimited (got -1000)",
			},
		},
		{
			name:    "below a byte per second",
			yaml:    "turn: {quotas: {max_bps_total: 7}}",
			wantErr: []string{"turn.quotas.max_bps_total: must be at least 8 bits per second, or 0 for unlimited (got 7)"},
		},
		{
			name:    "burst out of range",
			yaml:    "turn: {quotas: {bandwidth_burst: 0s}}",
			wantErr: []string{"turn.quotas.bandwidth_burst: must be between 10ms and 10s (got 0s)"},
		},
		{
			name:    "negative from the environment",
			env:     []string{"ICEBOX_TURN_QUOTAS_MAX_BPS_PER_ALLOCATION=-1"},
			wantErr: []string{"turn.quotas.max_bps_per_allocation: must be >= 0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(tc.yaml+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(file, tc.env)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatal("Load succeeded, want an error")
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			q := c.TURN.Quotas
			got := Quotas{MaxBPSPerAllocation: q.MaxBPSPerAllocation, MaxBPSPerUser: q.MaxBPSPerUser, MaxBPSTotal: q.MaxBPSTotal, BandwidthBurst: q.BandwidthBurst}
			if got != tc.want {
				t.Fatalf("bandwidth = %+v, want %+v", got, tc.want)
			}
		})
	}
}
