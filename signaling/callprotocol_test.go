package signaling

import (
	"testing"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

func TestResolveCallProtocol(t *testing.T) {
	tests := []struct {
		setting      string
		st           membership.State
		want, reason string
	}{
		{CallProtocolLegacy, membership.State{Live: 3}, CallProtocolLegacy, ReasonConfigured},
		{CallProtocolMatrixRTC, membership.State{}, CallProtocolMatrixRTC, ReasonConfigured},
		{CallProtocolAuto, membership.State{}, CallProtocolLegacy, ReasonNoRTC},
		{CallProtocolAuto, membership.State{Live: 1}, CallProtocolMatrixRTC, ReasonLiveCall},
		{CallProtocolAuto, membership.State{MembersRTC: 1}, CallProtocolMatrixRTC, ReasonLastCall},
		{CallProtocolAuto, membership.State{MembersRTC: 2}, CallProtocolMatrixRTC, ReasonLastCall},
		{CallProtocolAuto, membership.State{MembersRTC: 1, MembersLegacy: 1}, CallProtocolLegacy, ReasonNoRTC},
		{CallProtocolAuto, membership.State{MembersLegacy: 1}, CallProtocolLegacy, ReasonNoRTC},
		// A live call wins over members' legacy last calls.
		{CallProtocolAuto, membership.State{Live: 1, MembersLegacy: 2}, CallProtocolMatrixRTC, ReasonLiveCall},
	}
	for _, tt := range tests {
		got, reason := ResolveCallProtocol(tt.setting, tt.st)
		if got != tt.want || reason != tt.reason {
			t.Errorf("ResolveCallProtocol(%s, %+v) = %s, %s; want %s, %s", tt.setting, tt.st, got, reason, tt.want, tt.reason)
		}
	}
}
