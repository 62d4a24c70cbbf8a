package gateway

import (
	"bytes"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

// vp8Pkts splits frame into n VP8 RTP packets (a one-byte payload
// descriptor, S set on the first) from seq on, the marker on the last.
func vp8Pkts(seq uint16, ts uint32, frame []byte, n int) []*rtp.Packet {
	var out []*rtp.Packet
	size := (len(frame) + n - 1) / n
	for i := 0; i < n; i++ {
		end := min((i+1)*size, len(frame))
		desc := byte(0x00)
		if i == 0 {
			desc = 0x10 // S: start of the partition
		}
		out = append(out, &rtp.Packet{
			Header:  rtp.Header{SequenceNumber: seq + uint16(i), Timestamp: ts, Marker: i == n-1},
			Payload: append([]byte{desc}, frame[i*size:end]...),
		})
	}
	return out
}

type collected struct {
	frames  [][]byte
	ts      []uint32
	durs    []time.Duration
	dropped int
}

func (c *collected) push(a *assembler, pkts ...*rtp.Packet) {
	for _, p := range pkts {
		c.dropped += a.push(p, func(f assembled) {
			c.frames = append(c.frames, append([]byte(nil), f.data...))
			c.ts = append(c.ts, f.ts)
			c.durs = append(c.durs, f.dur)
		})
	}
}

func TestAssemblerVP8FrameAtItsMarker(t *testing.T) {
	a := newAssembler(&codecs.VP8Packet{}, 90000, 64, 33*time.Millisecond)
	var c collected
	f1 := bytes.Repeat([]byte{1}, 2500)
	p1 := vp8Pkts(65534, 1000, f1, 3) // the sequence numbers wrap inside the frame
	c.push(a, p1[0], p1[1])
	if len(c.frames) != 0 {
		t.Fatal("a frame out before its last packet")
	}
	c.push(a, p1[2])
	// Out at its marker, without waiting for the next frame's first packet
	// (pion's samplebuilder waits for it).
	if len(c.frames) != 1 || !bytes.Equal(c.frames[0], f1) || c.ts[0] != 1000 || c.durs[0] != 33*time.Millisecond {
		t.Fatalf("frames %d, ts %v, durations %v; want frame 1 whole at once", len(c.frames), c.ts, c.durs)
	}
	// Reordered inside the frame, and a duplicate.
	f2 := bytes.Repeat([]byte{2}, 900)
	p2 := vp8Pkts(1, 1000+3000, f2, 3)
	c.push(a, p2[2], p2[0], p2[0], p2[1])
	if len(c.frames) != 2 || !bytes.Equal(c.frames[1], f2) || c.durs[1] != 3000*time.Second/90000 {
		t.Fatalf("frames %d, durations %v; want frame 2 whole, 33.3 ms after frame 1", len(c.frames), c.durs)
	}
	// A retransmission of a frame passed on is ignored.
	c.push(a, p2[1])
	if len(c.frames) != 2 || c.dropped != 0 {
		t.Fatalf("frames %d, dropped %d after a late duplicate", len(c.frames), c.dropped)
	}
}

func TestAssemblerVP8LossDropsTheFrame(t *testing.T) {
	a := newAssembler(&codecs.VP8Packet{}, 90000, 64, 33*time.Millisecond)
	var c collected
	// Joined mid-frame: the tail of frame 0 is not a frame, and not a loss.
	c.push(a, vp8Pkts(5, 0, []byte{7, 7, 7, 7}, 2)[1])
	f := vp8Pkts(7, 1500, bytes.Repeat([]byte{3}, 30), 3)
	c.push(a, f...)
	if len(c.frames) != 1 || c.frames[0][0] != 3 || c.dropped != 0 {
		t.Fatalf("frames %d, dropped %d; want the first whole frame out and nothing counted", len(c.frames), c.dropped)
	}
	p1 := vp8Pkts(10, 3000, bytes.Repeat([]byte{1}, 300), 3)
	p2 := vp8Pkts(13, 6000, bytes.Repeat([]byte{2}, 300), 2)
	c.push(a, p1[0], p1[2]) // p1[1] lost
	c.push(a, p2...)
	if len(c.frames) != 2 || c.frames[1][0] != 2 || c.dropped != 1 {
		t.Fatalf("frames %d, dropped %d; want frame 2 out and frame 1 dropped", len(c.frames), c.dropped)
	}
	c.push(a, p1[1]) // too late: frame 1 was given up
	if len(c.frames) != 2 {
		t.Fatal("a frame given up came out later")
	}
	// Bounded: frames that never complete are given up past maxPending.
	var dropped int
	for i := 0; i < 10; i++ {
		p := vp8Pkts(uint16(100+3*i), uint32(9000+3000*i), []byte{9, 9, 9}, 3)
		c.push(a, p[0]) // only the first packet of each
		dropped = c.dropped
	}
	if len(a.pending) > maxPending || dropped < 10-maxPending {
		t.Fatalf("%d frames pending, %d dropped; want at most %d pending", len(a.pending), dropped, maxPending)
	}
	// A frame over maxPackets is dropped, not grown.
	b := newAssembler(&codecs.VP8Packet{}, 90000, 4, 33*time.Millisecond)
	var d collected
	d.push(b, vp8Pkts(1, 1, []byte{4}, 1)...)
	d.push(b, vp8Pkts(2, 3001, bytes.Repeat([]byte{3}, 50), 5)...)
	if len(d.frames) != 1 || d.dropped != 1 {
		t.Fatalf("a 5-packet frame with maxPackets 4: %d frames, %d dropped", len(d.frames), d.dropped)
	}
}

func TestAssemblerOpusEveryPacketAFrame(t *testing.T) {
	a := newAssembler(&codecs.OpusPacket{}, 48000, 1, 20*time.Millisecond)
	var c collected
	for i := 0; i < 3; i++ {
		c.push(a, &rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(7 + i), Timestamp: uint32(960 * i)}, Payload: []byte{0xfc, byte(i)}})
		if len(c.frames) != i+1 {
			t.Fatalf("after packet %d: %d frames; want each packet out at once", i, len(c.frames))
		}
	}
	if c.durs[1] != 20*time.Millisecond || c.durs[2] != 20*time.Millisecond {
		t.Fatalf("durations %v; want 20 ms", c.durs)
	}
	// A packet that arrives after a newer one is late.
	c.push(a, &rtp.Packet{Header: rtp.Header{SequenceNumber: 11, Timestamp: 960 * 4}, Payload: []byte{0xfc, 4}})
	c.push(a, &rtp.Packet{Header: rtp.Header{SequenceNumber: 10, Timestamp: 960 * 3}, Payload: []byte{0xfc, 3}})
	if len(c.frames) != 4 || c.frames[3][1] != 4 || c.durs[3] != 40*time.Millisecond {
		t.Fatalf("frames %d (%v), durations %v; want the late packet ignored, 40 ms to the newer", len(c.frames), c.frames, c.durs)
	}
}
