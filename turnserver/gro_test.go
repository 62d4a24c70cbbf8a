package turnserver

import "testing"

// TestUDPGROResolved: off by default; auto is on unless the kernel path
// may run (a coalesced packet would be too big for it); on and off are as
// said.
func TestUDPGROResolved(t *testing.T) {
	for _, tc := range []struct {
		gro, kernel string
		want        bool
	}{
		{"", "", false}, {"", KernelPathOff, false}, {UDPGROAuto, "", true}, {UDPGROAuto, KernelPathOff, true}, {UDPGROAuto, KernelPathAuto, false},
		{UDPGROAuto, KernelPathRequired, false}, {UDPGROOn, KernelPathRequired, true}, {UDPGROOff, KernelPathOff, false},
	} {
		if got := (Config{UDPGRO: tc.gro, KernelPath: tc.kernel}).groOn(); got != tc.want {
			t.Errorf("udp_gro %q with kernel_path %q: GRO %v, want %v", tc.gro, tc.kernel, got, tc.want)
		}
	}
}
