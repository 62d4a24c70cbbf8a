package membership

import (
	"context"
	"sync"
	"time"
)

// Bounds of the in-memory state (defaults of NewRooms).
const (
	// DefaultMaxRooms bounds the rooms tracked; the least recently
	// updated is forgotten past it (it is loaded again when asked).
	DefaultMaxRooms = 10000
	// DefaultMaxMembers bounds one room's memberships (device by device);
	// past it new ones are dropped and counted in State.Dropped. A live
	// call of that size is live anyway.
	DefaultMaxMembers = 64
	// loadTimeout bounds one Loader call.
	loadTimeout = 10 * time.Second
)

// Event is a membership state event as the sync delivers it.
type Event struct {
	StateKey string
	Sender   string
	Content  []byte // raw JSON; empty = left
	TS       time.Time
}

// Loader fetches a room's current membership state events (the
// homeserver's room state): after a restart the sync resumes where it
// stopped and does not repeat the memberships already in the room.
type Loader func(ctx context.Context, roomID string) ([]Event, error)

// State is what the rule reads of one room.
type State struct {
	Live       int       // unexpired joined memberships
	LastRTC    time.Time // newest joined membership's creation; zero if none seen
	LastLegacy time.Time // newest legacy m.call.invite seen; zero if none
	Dropped    int       // memberships not kept (MaxMembers)
	Known      bool      // the room's state was loaded or seen in the sync
}

// LastCallRTC reports whether the room's last call was a MatrixRTC one.
func (s State) LastCallRTC() bool { return !s.LastRTC.IsZero() && s.LastRTC.After(s.LastLegacy) }

// Rooms keeps the MatrixRTC memberships of the rooms it is told about.
// Safe for concurrent use.
type Rooms struct {
	maxRooms, maxMembers int
	load                 Loader

	mu    sync.Mutex
	rooms map[string]*room
	seq   uint64 // update counter, for least-recently-updated eviction
}

type room struct {
	members    map[string]Member // by state key
	lastRTC    time.Time
	lastLegacy time.Time
	dropped    int
	loaded     bool
	touched    uint64
}

// NewRooms makes an empty tracker; 0 bounds take the defaults. load may
// be nil (then only what the sync delivers is known).
func NewRooms(maxRooms, maxMembers int, load Loader) *Rooms {
	if maxRooms <= 0 {
		maxRooms = DefaultMaxRooms
	}
	if maxMembers <= 0 {
		maxMembers = DefaultMaxMembers
	}
	return &Rooms{maxRooms: maxRooms, maxMembers: maxMembers, load: load, rooms: make(map[string]*room)}
}

// SetLoader sets the Loader (the Matrix bridge, once its client exists).
func (r *Rooms) SetLoader(load Loader) {
	r.mu.Lock()
	r.load = load
	r.mu.Unlock()
}

// Observe applies a membership state event of a room. An invalid
// membership is returned as ErrInvalid and changes nothing.
func (r *Rooms) Observe(roomID string, ev Event) error {
	m, left, err := Parse(ev.Content, ev.Sender, ev.StateKey, ev.TS)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rm := r.roomLocked(roomID)
	r.applyLocked(rm, ev.StateKey, m, left)
	return nil
}

func (r *Rooms) applyLocked(rm *room, stateKey string, m Member, left bool) {
	if left {
		delete(rm.members, stateKey)
		return
	}
	if _, ok := rm.members[stateKey]; !ok && len(rm.members) >= r.maxMembers {
		rm.dropped++
	} else {
		rm.members[stateKey] = m
	}
	if m.Created.After(rm.lastRTC) {
		rm.lastRTC = m.Created
	}
}

// ObserveLegacyCall records a legacy m.call.invite sent in a room at ts.
func (r *Rooms) ObserveLegacyCall(roomID string, ts time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rm := r.roomLocked(roomID)
	if ts.After(rm.lastLegacy) {
		rm.lastLegacy = ts
	}
}

// Forget drops a room (icebox left it).
func (r *Rooms) Forget(roomID string) {
	r.mu.Lock()
	delete(r.rooms, roomID)
	r.mu.Unlock()
}

// State returns a room's state at now. A room whose state was never
// loaded is loaded first through the Loader (once; a failed load is
// tried again at the next call).
func (r *Rooms) State(ctx context.Context, roomID string, now time.Time) (State, error) {
	r.mu.Lock()
	rm, ok := r.rooms[roomID]
	load := r.load
	r.mu.Unlock()
	if (!ok || !rm.loaded) && load != nil {
		lctx, cancel := context.WithTimeout(ctx, loadTimeout)
		evs, err := load(lctx, roomID)
		cancel()
		if err != nil {
			return r.state(roomID, now), err
		}
		r.mu.Lock()
		rm = r.roomLocked(roomID)
		if !rm.loaded {
			// The room's current state replaces what the sync showed
			// meanwhile (it includes it); the history stays.
			rm.members = make(map[string]Member)
			for _, ev := range evs {
				if m, left, err := Parse(ev.Content, ev.Sender, ev.StateKey, ev.TS); err == nil {
					r.applyLocked(rm, ev.StateKey, m, left)
				}
			}
			rm.loaded = true
		}
		r.mu.Unlock()
	}
	return r.state(roomID, now), nil
}

func (r *Rooms) state(roomID string, now time.Time) State {
	r.mu.Lock()
	defer r.mu.Unlock()
	rm, ok := r.rooms[roomID]
	if !ok {
		return State{}
	}
	s := State{LastRTC: rm.lastRTC, LastLegacy: rm.lastLegacy, Dropped: rm.dropped, Known: true}
	for _, m := range rm.members {
		if m.Live(now) {
			s.Live++
		}
	}
	return s
}

// Members returns a room's live memberships at now (for the gateway).
func (r *Rooms) Members(roomID string, now time.Time) []Member {
	r.mu.Lock()
	defer r.mu.Unlock()
	rm, ok := r.rooms[roomID]
	if !ok {
		return nil
	}
	out := make([]Member, 0, len(rm.members))
	for _, m := range rm.members {
		if m.Live(now) {
			out = append(out, m)
		}
	}
	return out
}

// Len is the number of rooms tracked.
func (r *Rooms) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.rooms)
}

// roomLocked returns roomID's entry, made (and the least recently updated
// one evicted past maxRooms) if needed, and marks it updated.
func (r *Rooms) roomLocked(roomID string) *room {
	r.seq++
	rm, ok := r.rooms[roomID]
	if !ok {
		if len(r.rooms) >= r.maxRooms {
			var oldest string
			var min uint64
			for id, o := range r.rooms {
				if oldest == "" || o.touched < min {
					oldest, min = id, o.touched
				}
			}
			delete(r.rooms, oldest)
		}
		rm = &room{members: make(map[string]Member)}
		r.rooms[roomID] = rm
	}
	rm.touched = r.seq
	return rm
}
