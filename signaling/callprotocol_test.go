package signaling

import (
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

func TestResolveCallProtocol(t *testing.T) {
	now := time.Unix(1_780_000_000, 0)
	tests := []struct {
		setting      string
		st           membership.State
		want, reason string
	}{
		{CallProtocolLegacy, membership.State{Live: 3}, CallProtocolLegacy, ReasonConfigured},
		{CallProtocolMatrixRTC, membership.State{}, CallProtocolMatrixRTC, ReasonConfigured},
		{CallProtocolAuto, membership.State{}, CallProtocolLegacy, ReasonNoRTC},
		{CallProtocolAuto, membership.State{Live: 1}, CallProtocolMatrixRTC, ReasonLiveCall},
		{CallProtocolAuto, membership.State{LastRTC: now}, CallProtocolMatrixRTC, ReasonLastCall},
		{CallProtocolAuto, membership.State{LastRTC: now, LastLegacy: now.Add(time.Second)}, CallProtocolLegacy, ReasonNoRTC},
		{CallProtocolAuto, membership.State{LastRTC: now.Add(time.Second), LastLegacy: now}, CallProtocolMatrixRTC, ReasonLastCall},
		// A live call wins over a newer legacy call.
		{CallProtocolAuto, membership.State{Live: 1, LastRTC: now, LastLegacy: now.Add(time.Second)}, CallProtocolMatrixRTC, ReasonLiveCall},
	}
	for _, tt := range tests {
		got, reason := ResolveCallProtocol(tt.setting, tt.st)
		if got != tt.want || reason != tt.reason {
			t.Errorf("ResolveCallProtocol(%s, %+v) = %s, %s; want %s, %s", tt.setting, tt.st, got, reason, tt.want, tt.reason)
		}
	}
}
