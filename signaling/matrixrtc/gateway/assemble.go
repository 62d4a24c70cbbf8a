package gateway

import (
	"slices"
	"time"

	"github.com/pion/rtp"
)

// assembler turns a track's RTP packets into encoded frames as soon as a
// frame's last packet is in: every Opus packet is a frame, a video frame
// ends at its marker bit (RFC 7741 for VP8). Hand-written instead of pion's
// samplebuilder, which learns where a frame ends from the next frame's
// first packet, so it holds every frame one frame interval: the gateway
// benchmark measured +20 ms per Opus frame and +33 ms per VP8 frame in
// each direction with it (bench/measure_gateway.go).
//
// Loss is handled the plain way: a frame still missing a packet when a
// newer frame completes is dropped (its packets reordered further than
// that, or lost) and counted, so that the caller asks for a key frame;
// packets of a frame already passed on or dropped are ignored. At most
// maxPending frames wait, each of at most maxPackets packets.
type assembler struct {
	dep        rtp.Depacketizer
	clockRate  uint32
	maxPackets int
	// defaultDur is a frame's duration when the timestamps cannot say
	// (the first frame, a jump).
	defaultDur time.Duration

	pending []*pendingFrame // oldest first
	done    bool            // a frame was passed on or dropped: doneTS and doneSeq are set
	doneTS  uint32          // the timestamp of the newest frame passed on or dropped
	doneSeq uint16          // the highest sequence number of those frames
	lastOut uint32          // the timestamp of the last frame passed on
	outOnce bool
	scratch []byte
}

// pendingFrame is one frame's packets so far, sorted by sequence number.
type pendingFrame struct {
	ts   uint32
	pkts []*rtp.Packet
}

// assembled is one frame out of the assembler.
type assembled struct {
	data []byte
	ts   uint32
	dur  time.Duration
}

// maxPending is how many frames may wait for their packets at once.
const maxPending = 4

func newAssembler(dep rtp.Depacketizer, clockRate uint32, maxPackets int, defaultDur time.Duration) *assembler {
	return &assembler{dep: dep, clockRate: clockRate, maxPackets: maxPackets, defaultDur: defaultDur}
}

// seqBefore reports whether a comes before b in sequence-number order
// (RFC 3550 wraparound).
func seqBefore(a, b uint16) bool { return int16(a-b) < 0 }

// tsBefore is seqBefore for RTP timestamps.
func tsBefore(a, b uint32) bool { return int32(a-b) < 0 }

// push takes one packet and calls emit for each frame it completes, in
// order; it returns how many frames it dropped. The partial frame a stream
// is joined in the middle of, before the first frame passed on, is not
// counted: nothing of it was lost here.
func (a *assembler) push(p *rtp.Packet, emit func(assembled)) (dropped int) {
	started := a.outOnce
	defer func() {
		if !started {
			dropped = 0
		}
	}()
	if a.done && (!seqBefore(a.doneSeq, p.SequenceNumber) || !tsBefore(a.doneTS, p.Timestamp)) {
		return 0 // a frame already passed on or dropped: late, or a duplicate
	}
	f := a.frame(p.Timestamp)
	if f == nil {
		if len(a.pending) == maxPending {
			a.finish(a.pending[0])
			a.pending = a.pending[1:]
			dropped++
		}
		f = &pendingFrame{ts: p.Timestamp}
		i, _ := slices.BinarySearchFunc(a.pending, p.Timestamp, func(f *pendingFrame, ts uint32) int {
			if f.ts == ts {
				return 0
			}
			if tsBefore(f.ts, ts) {
				return -1
			}
			return 1
		})
		a.pending = slices.Insert(a.pending, i, f)
	}
	i, found := slices.BinarySearchFunc(f.pkts, p.SequenceNumber, func(q *rtp.Packet, seq uint16) int {
		if q.SequenceNumber == seq {
			return 0
		}
		if seqBefore(q.SequenceNumber, seq) {
			return -1
		}
		return 1
	})
	if found {
		return dropped // a duplicate
	}
	if len(f.pkts) == a.maxPackets {
		a.remove(f)
		return dropped + 1
	}
	f.pkts = slices.Insert(f.pkts, i, p)

	// The newest complete frame goes out, and every older one still
	// incomplete is given up.
	for j := len(a.pending) - 1; j >= 0; j-- {
		if !a.complete(a.pending[j]) {
			continue
		}
		for _, old := range a.pending[:j] {
			a.finish(old)
			dropped++
		}
		c := a.pending[j]
		a.pending = a.pending[j+1:]
		a.finish(c)
		if data, ok := a.depacketize(c); ok {
			emit(assembled{data: data, ts: c.ts, dur: a.duration(c.ts)})
		} else {
			dropped++
		}
		break
	}
	return dropped
}

// frame is the pending frame of timestamp ts, or nil.
func (a *assembler) frame(ts uint32) *pendingFrame {
	for _, f := range a.pending {
		if f.ts == ts {
			return f
		}
	}
	return nil
}

// complete reports whether f has its first and last packet and every one
// between.
func (a *assembler) complete(f *pendingFrame) bool {
	n := len(f.pkts)
	if n == 0 || !a.dep.IsPartitionHead(f.pkts[0].Payload) {
		return false
	}
	last := f.pkts[n-1]
	if !a.dep.IsPartitionTail(last.Marker, last.Payload) {
		return false
	}
	return last.SequenceNumber-f.pkts[0].SequenceNumber == uint16(n-1)
}

// finish marks f's packets as done: later packets of it are ignored.
func (a *assembler) finish(f *pendingFrame) {
	for _, p := range f.pkts {
		if !a.done || seqBefore(a.doneSeq, p.SequenceNumber) {
			a.doneSeq = p.SequenceNumber
		}
	}
	if !a.done || tsBefore(a.doneTS, f.ts) {
		a.doneTS = f.ts
	}
	a.done = a.done || len(f.pkts) > 0
}

func (a *assembler) remove(f *pendingFrame) {
	a.finish(f)
	a.pending = slices.DeleteFunc(a.pending, func(g *pendingFrame) bool { return g == f })
}

// depacketize joins f's payloads into one new frame: the frame goes on
// to tracks that may keep it past the next push (as the samplebuilder's
// samples did).
func (a *assembler) depacketize(f *pendingFrame) ([]byte, bool) {
	n := 0
	for _, p := range f.pkts {
		n += len(p.Payload)
	}
	out := make([]byte, 0, n)
	for _, p := range f.pkts {
		b, err := a.dep.Unmarshal(p.Payload)
		if err != nil {
			return nil, false
		}
		out = append(out, b...)
	}
	return out, len(out) > 0
}

// duration is the time from the last frame passed on to the frame of
// timestamp ts: what the frame lasts for the next hop's timestamps.
func (a *assembler) duration(ts uint32) time.Duration {
	prev, ok := a.lastOut, a.outOnce
	a.lastOut, a.outOnce = ts, true
	d := ts - prev
	if !ok || d == 0 || int32(d) < 0 || d > a.clockRate {
		return a.defaultDur
	}
	return time.Duration(d) * time.Second / time.Duration(a.clockRate)
}
