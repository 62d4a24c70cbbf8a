package store

import (
	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// A call's SDP bodies live in bucket call_sdps (schema 5), as the bytes the
// client sent: key = call ID, 0x00, 'o' (offer) or 'a' (answer). The call's
// JSON record leaves them out. In JSON, even without HTML escaping, a
// control character takes six bytes (\u0001) and a quote two, and the
// signaling layer accepts any UTF-8: an SDP made of them filled the file six
// times faster than its size (issue 13). Kept apart, they are also not
// rewritten with every transition of the call.
//
// A record written before schema 5 still carries its SDPs inline; getCall
// reads those as they are, and the call's next write moves them here.

var (
	sdpOffer  = byte('o')
	sdpAnswer = byte('a')
)

func sdpKey(id []byte, kind byte) []byte {
	k := make([]byte, 0, len(id)+2)
	return append(append(append(k, id...), 0), kind)
}

// fillSDPs gives c, read from its record, the SDPs stored apart.
func fillSDPs(tx *bolt.Tx, id []byte, c *signaling.Call) {
	b := tx.Bucket(bucketCallSDPs)
	if c.SDPOffer == "" {
		c.SDPOffer = string(b.Get(sdpKey(id, sdpOffer)))
	}
	if c.SDPAnswer == "" {
		c.SDPAnswer = string(b.Get(sdpKey(id, sdpAnswer)))
	}
}

// putSDPs stores c's SDPs apart, writing only those that changed (or that
// old's record still carried inline).
func putSDPs(tx *bolt.Tx, old *signaling.Call, c signaling.Call) error {
	b := tx.Bucket(bucketCallSDPs)
	id := []byte(c.ID)
	for _, s := range []struct {
		kind     byte
		new, old string
	}{
		{sdpOffer, c.SDPOffer, oldSDP(old, sdpOffer)},
		{sdpAnswer, c.SDPAnswer, oldSDP(old, sdpAnswer)},
	} {
		key := sdpKey(id, s.kind)
		switch {
		case s.new == "":
			if err := b.Delete(key); err != nil {
				return err
			}
		case old == nil || s.new != s.old || b.Get(key) == nil:
			if err := b.Put(key, []byte(s.new)); err != nil {
				return err
			}
		}
	}
	return nil
}

func oldSDP(old *signaling.Call, kind byte) string {
	switch {
	case old == nil:
		return ""
	case kind == sdpOffer:
		return old.SDPOffer
	default:
		return old.SDPAnswer
	}
}

// deleteSDPs deletes a call's SDPs.
func deleteSDPs(tx *bolt.Tx, id []byte) error {
	b := tx.Bucket(bucketCallSDPs)
	if err := b.Delete(sdpKey(id, sdpOffer)); err != nil {
		return err
	}
	return b.Delete(sdpKey(id, sdpAnswer))
}
