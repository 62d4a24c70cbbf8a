package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/pion/stun/v4"
)

// STUN retransmission over UDP: RFC 8489's RTO, doubled, capped so that a
// lost packet does not eat the whole timeout.
const (
	bindingRTO    = 250 * time.Millisecond
	bindingMaxRTO = time.Second
)

var errNoMapped = errors.New("binding response without a mapped address")

// bindingUDP sends Binding requests on a connected UDP socket, with
// retransmissions, until a response arrives or the deadline passes. Being
// connected, the socket reports ICMP port unreachable as ECONNREFUSED.
func bindingUDP(conn *net.UDPConn, deadline time.Time) (*net.UDPAddr, error) {
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	rto := bindingRTO
	for {
		if _, err := conn.Write(req.Raw); err != nil {
			return nil, err
		}
		wait := time.Now().Add(rto)
		if wait.After(deadline) {
			wait = deadline
		}
		_ = conn.SetReadDeadline(wait)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return nil, err
			}
			if addr, ok, err := bindingResponse(buf[:n], req); ok {
				_ = conn.SetReadDeadline(time.Time{})
				return addr, err
			}
		}
		if !time.Now().Before(deadline) {
			return nil, timeoutError{"no STUN binding response"}
		}
		rto = min(2*rto, bindingMaxRTO)
	}
}

// bindingStream sends one Binding request on a TCP or TLS connection and
// reads the response (STUN messages carry their length, so no framing).
func bindingStream(conn net.Conn, deadline time.Time) (*net.UDPAddr, error) {
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(deadline)
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write(req.Raw); err != nil {
		return nil, err
	}
	for {
		hdr := make([]byte, 20)
		if _, err := io.ReadFull(conn, hdr); err != nil {
			return nil, err
		}
		if hdr[0]&0xc0 != 0 { // ChannelData: not ours
			return nil, errors.New("unexpected ChannelData before the binding response")
		}
		body := make([]byte, binary.BigEndian.Uint16(hdr[2:4]))
		if _, err := io.ReadFull(conn, body); err != nil {
			return nil, err
		}
		if addr, ok, err := bindingResponse(append(hdr, body...), req); ok {
			return addr, err
		}
	}
}

// bindingResponse decodes raw; ok is false if it is not the response to req.
func bindingResponse(raw []byte, req *stun.Message) (*net.UDPAddr, bool, error) {
	res := &stun.Message{Raw: append([]byte(nil), raw...)}
	if err := res.Decode(); err != nil || res.TransactionID != req.TransactionID {
		return nil, false, nil
	}
	if res.Type.Class == stun.ClassErrorResponse {
		var code stun.ErrorCodeAttribute
		if code.GetFrom(res) == nil {
			return nil, true, fmt.Errorf("binding error response %d %s", code.Code, code.Reason)
		}
		return nil, true, errors.New("binding error response")
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(res); err == nil {
		return &net.UDPAddr{IP: xor.IP, Port: xor.Port}, true, nil
	}
	var mapped stun.MappedAddress
	if err := mapped.GetFrom(res); err == nil {
		return &net.UDPAddr{IP: mapped.IP, Port: mapped.Port}, true, nil
	}
	return nil, true, errNoMapped
}

// timeoutError is a net.Error that timed out.
type timeoutError struct{ msg string }

func (e timeoutError) Error() string   { return e.msg }
func (e timeoutError) Timeout() bool   { return true }
func (e timeoutError) Temporary() bool { return true }
