// Package membership reads MatrixRTC call memberships
// (org.matrix.msc3401.call.member state events, as Element Call and
// Element X send them) and keeps, per Matrix room, which members are in a
// live MatrixRTC call, and per user whether their last call was a
// MatrixRTC one. It is what matrix.call_protocol "auto" decides by.
//
// Which membership is live follows matrix-js-sdk (CallMembership,
// MatrixRTCSession, v43): a state event whose content is empty (or holds
// only the deprecated "memberships" list) is a member who left; a joined
// one carries application, call_id, device_id and focus_active.type; it
// expires at created_ts (else the event's origin_server_ts) plus expires
// (else 4 hours).
package membership

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// EventType is the state event type of a MatrixRTC call membership.
const EventType = "org.matrix.msc3401.call.member"

// DefaultExpires is a membership's lifetime when its content has no
// expires (matrix-js-sdk's DEFAULT_EXPIRE_DURATION).
const DefaultExpires = 4 * time.Hour

// stickyKey is MSC4354's field, not counted as content (matrix-js-sdk).
const stickyKey = "msc4354_sticky_key"

// Member is one device's joined membership.
type Member struct {
	StateKey    string
	Sender      string
	DeviceID    string
	CallID      string // "" is the room's call
	Application string // "m.call" for Element Call
	FocusType   string // focus_active.type, "livekit" for Element Call
	Created     time.Time
	Expiry      time.Time

	// EventID is the membership state event's ID (what a MatrixRTC
	// notification relates to); "" when the event's ID was not known.
	EventID string
	// FocusSelection is focus_active.focus_selection ("oldest_membership"
	// for Element Call: the call's LiveKit focus is the oldest member's
	// first preferred one; "multi_sfu": each member's own).
	FocusSelection string
	// ServiceURL and Alias are the member's first preferred focus's
	// livekit_service_url and livekit_alias (matrix-js-sdk's
	// getTransport takes foci_preferred[0]); "" when it is not a LiveKit
	// focus. ServiceURL is where that member's /sfu/get is.
	ServiceURL string
	Alias      string
	// Intent is m.call.intent ("audio", "video"), "" when absent.
	Intent string
}

// Device is one Matrix device taking part in a MatrixRTC call: who media
// keys are sent to and received from.
type Device struct {
	UserID   string
	DeviceID string
}

// Identity is the device's LiveKit participant identity for memberships of
// the org.matrix.msc3401.call.member form: "<user ID>:<device ID>" (the
// identity lk-jwt-service's /sfu/get grants).
func (d Device) Identity() string { return d.UserID + ":" + d.DeviceID }

// Device is the member's device.
func (m Member) Device() Device { return Device{UserID: m.Sender, DeviceID: m.DeviceID} }

// Live reports whether the membership has not expired at now.
func (m Member) Live(now time.Time) bool { return now.Before(m.Expiry) }

// ErrInvalid marks a joined-looking content that is not a membership
// matrix-js-sdk would accept.
var ErrInvalid = errors.New("membership: invalid call membership")

// content is the joined membership's fields icebox reads.
type content struct {
	Application *string `json:"application"`
	CallID      *string `json:"call_id"`
	DeviceID    *string `json:"device_id"`
	CreatedTS   *int64  `json:"created_ts"`
	Expires     *int64  `json:"expires"`
	FocusActive *struct {
		Type           *string `json:"type"`
		FocusSelection string  `json:"focus_selection"`
	} `json:"focus_active"`
	// The foci and the intent are read leniently: a membership
	// matrix-js-sdk accepts stays accepted when they are odd.
	FociPreferred json.RawMessage `json:"foci_preferred"`
	Intent        json.RawMessage `json:"m.call.intent"`
}

// focus is one entry of foci_preferred.
type focus struct {
	Type       string `json:"type"`
	ServiceURL string `json:"livekit_service_url"`
	Alias      string `json:"livekit_alias"`
}

// Parse reads a membership state event's content. left is true for a
// member who left (empty content, or only the deprecated "memberships"
// list, which matrix-js-sdk ignores). A joined-looking content missing a
// required field is ErrInvalid. ts is the event's origin_server_ts.
func Parse(raw []byte, sender, stateKey string, ts time.Time) (m Member, left bool, err error) {
	var keys map[string]json.RawMessage
	if len(raw) == 0 {
		return Member{}, true, nil
	}
	if err := json.Unmarshal(raw, &keys); err != nil {
		return Member{}, false, fmt.Errorf("%w: content is not an object", ErrInvalid)
	}
	delete(keys, stickyKey)
	if _, ok := keys["application"]; !ok || len(keys) < 2 {
		return Member{}, true, nil
	}
	if !ownKey(stateKey, sender) {
		return Member{}, false, fmt.Errorf("%w: state key of another user", ErrInvalid)
	}
	var c content
	if err := json.Unmarshal(raw, &c); err != nil {
		return Member{}, false, fmt.Errorf("%w: %s", ErrInvalid, typeError(err))
	}
	switch {
	case c.Application == nil:
		return Member{}, false, fmt.Errorf("%w: application must be a string", ErrInvalid)
	case c.CallID == nil:
		return Member{}, false, fmt.Errorf("%w: call_id must be a string", ErrInvalid)
	case c.DeviceID == nil:
		return Member{}, false, fmt.Errorf("%w: device_id must be a string", ErrInvalid)
	case c.FocusActive == nil || c.FocusActive.Type == nil:
		return Member{}, false, fmt.Errorf("%w: focus_active.type must be a string", ErrInvalid)
	}
	created := ts
	if c.CreatedTS != nil {
		created = time.UnixMilli(*c.CreatedTS)
	}
	expires := DefaultExpires
	if c.Expires != nil {
		expires = time.Duration(*c.Expires) * time.Millisecond
	}
	m = Member{
		StateKey: stateKey, Sender: sender, DeviceID: *c.DeviceID, CallID: *c.CallID,
		Application: *c.Application, FocusType: *c.FocusActive.Type, FocusSelection: c.FocusActive.FocusSelection,
		Created: created, Expiry: created.Add(expires),
	}
	var foci []json.RawMessage
	if json.Unmarshal(c.FociPreferred, &foci) == nil && len(foci) > 0 {
		var f focus
		if json.Unmarshal(foci[0], &f) == nil && f.Type == "livekit" {
			m.ServiceURL, m.Alias = f.ServiceURL, f.Alias
		}
	}
	_ = json.Unmarshal(c.Intent, &m.Intent) // not a string: left ""
	return m, false, nil
}

// ParseEvent is Parse of a membership event, with its event ID.
func ParseEvent(ev Event) (m Member, left bool, err error) {
	m, left, err = Parse(ev.Content, ev.Sender, ev.StateKey, ev.TS)
	if err == nil && !left {
		m.EventID = ev.EventID
	}
	return m, left, err
}

// DeviceOfStateKey is the device a membership's state key names, for a
// member who left (the empty content names none): "" when the key is not
// one of the sender's own forms with a device.
func DeviceOfStateKey(stateKey, sender string) string {
	if !ownKey(stateKey, sender) {
		return ""
	}
	k := strings.TrimPrefix(strings.TrimPrefix(stateKey, "_"), sender)
	k = strings.TrimPrefix(k, "_")
	if strings.HasPrefix(stateKey, "_") {
		// "_@user:server_DEVICE_m.call": the application follows the device.
		if i := strings.LastIndex(k, "_"); i >= 0 {
			k = k[:i]
		}
	}
	return k
}

// ownKey reports whether a membership's state key is the sender's: the
// forms are "_@user:server_DEVICE_m.call" (MSC3757's owned state, what
// Element Call sends), "@user:server_DEVICE" and the user ID itself (older
// ones). A homeserver without MSC3757 lets anyone with the power write any
// key; a member must not make another user look in a call.
func ownKey(stateKey, sender string) bool {
	k := strings.TrimPrefix(stateKey, "_")
	return sender != "" && (k == sender || strings.HasPrefix(k, sender+"_"))
}

// typeError names the field of a json type error without the value.
func typeError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field + " has the wrong type"
	}
	return "malformed content"
}
