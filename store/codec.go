package store

import (
	"fmt"

	"github.com/icebox-voip/icebox/signaling"
)

// Records is the call record codec, handed to the other drivers
// (store/postgres takes it as its Options.Records): a call is stored as the
// same JSON record (callRecord, callrecord.go) whatever the driver, so a
// field added to the record is carried by every driver without a schema
// change of its own, and `icebox store migrate` copies records as they are.
// The driver does not import this package, so that this package's tests
// can run the same behavioural suite against it.
type Records struct{}

// EncodeCall is c's stored record, without its SDP bodies (every driver
// keeps them apart, as bytes: see sdp.go for why).
func (Records) EncodeCall(c signaling.Call) ([]byte, error) {
	rec := recordOf(c)
	rec.SDPOffer, rec.SDPAnswer = "", ""
	raw, err := encode(rec)
	if err != nil {
		return nil, fmt.Errorf("encode call %q: %w", c.ID, err)
	}
	return raw, nil
}

// DecodeCall is the call a stored record holds (its SDPs are those the
// record carries inline, if any); ErrCorrupt if it does not decode.
func (Records) DecodeCall(id string, raw []byte) (signaling.Call, error) {
	return decodeCall([]byte(id), raw)
}
