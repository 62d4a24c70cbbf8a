package probe

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"
)

// Burst packets: magic, sequence number, send time (ns since the burst
// started), padding to a typical audio packet size.
const (
	burstMagic   = "ibxC"
	burstPktSize = 160
)

// burst sends Config.Packets packets from a's relay to b's relay; b echoes
// each back to a's relay. It records RTT and loss and sets the verdict.
func (p *prober) burst(a, b *alloc) {
	start := time.Now()
	aAddr, bAddr := a.relay.LocalAddr(), b.relay.LocalAddr()
	n := p.cfg.Packets
	end := start.Add(time.Duration(n)*p.cfg.Interval + drainWait)

	// The peer echoes what comes from a's relay until the burst ends.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		_ = b.relay.SetReadDeadline(end)
		for {
			m, from, err := b.relay.ReadFrom(buf)
			if err != nil {
				return
			}
			if from.String() == aAddr.String() && bytes.HasPrefix(buf[:m], []byte(burstMagic)) {
				_, _ = b.relay.WriteTo(buf[:m], from)
			}
		}
	}()

	rtts := make([]time.Duration, n)
	got := make([]bool, n)
	received := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		_ = a.relay.SetReadDeadline(end)
		for received < n {
			m, from, err := a.relay.ReadFrom(buf)
			if err != nil {
				return
			}
			if from.String() != bAddr.String() || m < 16 || !bytes.HasPrefix(buf[:m], []byte(burstMagic)) {
				continue
			}
			seq := int(binary.BigEndian.Uint32(buf[4:8]))
			sent := time.Duration(binary.BigEndian.Uint64(buf[8:16]))
			if seq >= n || got[seq] {
				continue
			}
			got[seq] = true
			rtts[seq] = time.Since(start) - sent
			received++
		}
	}()

	pkt := make([]byte, burstPktSize)
	copy(pkt, burstMagic)
	tick := time.NewTicker(p.cfg.Interval) // pacing the sends, not waiting for anything
	var sendErr error
	for i := 0; i < n; i++ {
		binary.BigEndian.PutUint32(pkt[4:8], uint32(i))
		binary.BigEndian.PutUint64(pkt[8:16], uint64(time.Since(start)))
		if _, err := a.relay.WriteTo(pkt, bAddr); err != nil && sendErr == nil {
			sendErr = err
		}
		if i < n-1 {
			<-tick.C
		}
	}
	tick.Stop()
	<-done
	// Stop the echo now rather than at the drain deadline.
	_ = b.relay.SetReadDeadline(time.Now())
	wg.Wait()
	_ = a.relay.SetReadDeadline(time.Time{})
	_ = b.relay.SetReadDeadline(time.Time{})

	st := &RelayStats{Sent: n, Received: received, Loss: float64(n-received) / float64(n)}
	var sum time.Duration
	for i, ok := range got {
		if !ok {
			continue
		}
		r := rtts[i]
		sum += r
		if st.RTTMin == 0 || r < st.RTTMin {
			st.RTTMin = r
		}
		st.RTTMax = max(st.RTTMax, r)
	}
	if received > 0 {
		st.RTTAvg = sum / time.Duration(received)
	}
	p.r.Stats = st
	d := time.Since(start)
	detail := fmt.Sprintf("%d/%d packets back, loss %.1f%%", received, n, 100*st.Loss)
	if received > 0 {
		detail += fmt.Sprintf(", rtt min/avg/max %s/%s/%s", roundDur(st.RTTMin), roundDur(st.RTTAvg), roundDur(st.RTTMax))
	}
	switch {
	case received == 0:
		msg := fmt.Sprintf("no packet crossed from relay %s to relay %s and back (0 of %d)", aAddr, bAddr, n)
		if sendErr != nil {
			msg += fmt.Sprintf("; sending failed: %v", sendErr)
		}
		p.r.fail("relay", d, VerdictNoData, msg,
			"the server granted the permissions but relays nothing between its own relay addresses: a firewall may block "+
				"the relay port range (icebox: turn.relay.min_port-max_port; coturn: min-port/max-port), or the advertised relay address "+
				"does not lead back to the server (behind NAT: set icebox turn.relay.public_ip or coturn external-ip, and let the NAT forward the relay range)")
	case st.Loss > maxLoss:
		p.r.fail("relay", d, VerdictLoss, detail, "heavy loss through the relay: the server or the path is overloaded, or a bandwidth limit applies")
	case st.Loss > 0:
		p.r.Warnings = append(p.r.Warnings, fmt.Sprintf("%d of %d packets lost", n-received, n))
		p.r.step("relay", StatusWarn, d, detail)
		p.r.Verdict = VerdictOK
	default:
		p.r.step("relay", StatusOK, d, detail)
		p.r.Verdict = VerdictOK
	}
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= 100*time.Microsecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

var _ net.PacketConn = connectedPacketConn{}
