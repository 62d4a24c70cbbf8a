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
	// DefaultMaxUsers bounds the users whose last call is remembered;
	// the least recently updated is forgotten past it.
	DefaultMaxUsers = 10000
	// DefaultMaxMembers bounds one room's memberships (device by device);
	// past it new ones are dropped and counted in State.Dropped. A live
	// call of that size is live anyway.
	DefaultMaxMembers = 64
	// loadTimeout bounds one Loader call.
	loadTimeout = 10 * time.Second
)

// Event is a membership state event as the sync delivers it.
type Event struct {
	EventID  string // "" when not known (then Member.EventID is "")
	StateKey string
	Sender   string
	Content  []byte // raw JSON; empty = left
	TS       time.Time
}

// Loader fetches a room's current membership state events (the
// homeserver's room state): after a restart the sync resumes where it
// stopped and does not repeat the memberships already in the room.
type Loader func(ctx context.Context, roomID string) ([]Event, error)

// State is what the rule reads of one room and its members.
type State struct {
	Live    int  // unexpired joined memberships
	Dropped int  // memberships not kept (MaxMembers)
	Known   bool // the room's state was loaded or seen in the sync
	// Of the members asked about whose last call icebox saw (in any
	// room): how many last called with MatrixRTC, how many with a legacy
	// m.call.invite.
	MembersRTC, MembersLegacy int
}

// LastCallRTC reports whether the members' last calls were MatrixRTC: at
// least one member's was, and none's was legacy.
func (s State) LastCallRTC() bool { return s.MembersRTC > 0 && s.MembersLegacy == 0 }

// Rooms keeps the MatrixRTC memberships of the rooms it is told about.
// Safe for concurrent use.
type Rooms struct {
	maxRooms, maxMembers, maxUsers int
	load                           Loader

	mu    sync.Mutex
	rooms map[string]*room
	users map[string]*lastCall // by user ID
	seq   uint64               // update counter, for least-recently-updated eviction
}

type room struct {
	members map[string]Member // by state key
	dropped int
	loaded  bool
	touched uint64
}

// lastCall is when a user last joined a MatrixRTC call and last sent a
// legacy invite.
type lastCall struct {
	rtc, legacy time.Time
	touched     uint64
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
	return &Rooms{maxRooms: maxRooms, maxMembers: maxMembers, maxUsers: DefaultMaxUsers, load: load,
		rooms: make(map[string]*room), users: make(map[string]*lastCall)}
}

// SetLoader sets the Loader (the Matrix bridge, once its client exists).
func (r *Rooms) SetLoader(load Loader) {
	r.mu.Lock()
	r.load = load
	r.mu.Unlock()
}

// Observe applies a membership state event of a room and reports whether
// it was a member leaving. An invalid membership is returned as ErrInvalid
// and changes nothing.
func (r *Rooms) Observe(roomID string, ev Event) (left bool, err error) {
	c, err := r.Apply(roomID, ev)
	return c.Left, err
}

// Change is what one membership event changed in a room.
type Change struct {
	Member Member // the new membership; for one who left, only its state key and sender
	Left   bool
	// Prev is the membership the state key held before, when it was
	// kept (a room's state loaded or seen in the sync, within MaxMembers).
	Prev    Member
	HadPrev bool
}

// Apply is Observe, returning the change: the gateway needs the device of
// a member who left (the emptied content names none) and whether a
// membership is new.
func (r *Rooms) Apply(roomID string, ev Event) (Change, error) {
	m, left, err := ParseEvent(ev)
	if err != nil {
		return Change{}, err
	}
	if left {
		m = Member{StateKey: ev.StateKey, Sender: ev.Sender}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rm := r.roomLocked(roomID)
	prev, had := rm.members[ev.StateKey]
	r.applyLocked(rm, ev.StateKey, m, left)
	return Change{Member: m, Left: left, Prev: prev, HadPrev: had}, nil
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
	if u := r.userLocked(m.Sender); m.Created.After(u.rtc) {
		u.rtc = m.Created
	}
}

// ObserveLegacyCall records a legacy m.call.invite sent by sender at ts
// (in any room: a user's last call is theirs, not the room's).
func (r *Rooms) ObserveLegacyCall(sender string, ts time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u := r.userLocked(sender); ts.After(u.legacy) {
		u.legacy = ts
	}
}

// Forget drops a room (icebox left it).
func (r *Rooms) Forget(roomID string) {
	r.mu.Lock()
	delete(r.rooms, roomID)
	r.mu.Unlock()
}

// State returns a room's state at now, and the last calls of members. A room whose state was never
// loaded is loaded first through the Loader (once; a failed load is
// tried again at the next call).
func (r *Rooms) State(ctx context.Context, roomID string, members []string, now time.Time) (State, error) {
	if r == nil { // a nil *Rooms in an interface: nothing known
		return State{}, nil
	}
	r.mu.Lock()
	rm, ok := r.rooms[roomID]
	load := r.load
	r.mu.Unlock()
	if (!ok || !rm.loaded) && load != nil {
		lctx, cancel := context.WithTimeout(ctx, loadTimeout)
		evs, err := load(lctx, roomID)
		cancel()
		if err != nil {
			return r.state(roomID, members, now), err
		}
		r.mu.Lock()
		rm = r.roomLocked(roomID)
		if !rm.loaded {
			// The room's current state replaces what the sync showed
			// meanwhile (it includes it); the history stays.
			rm.members = make(map[string]Member)
			for _, ev := range evs {
				if m, left, err := ParseEvent(ev); err == nil {
					r.applyLocked(rm, ev.StateKey, m, left)
				}
			}
			rm.loaded = true
		}
		r.mu.Unlock()
	}
	return r.state(roomID, members, now), nil
}

func (r *Rooms) state(roomID string, members []string, now time.Time) State {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s State
	for _, u := range members {
		switch lc, ok := r.users[u]; {
		case !ok:
		case lc.rtc.After(lc.legacy):
			s.MembersRTC++
		case !lc.legacy.IsZero():
			s.MembersLegacy++
		}
	}
	rm, ok := r.rooms[roomID]
	if !ok {
		return s
	}
	s.Dropped, s.Known = rm.dropped, true
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

// userLocked returns user's entry, made (and the least recently updated
// one evicted past maxUsers) if needed, and marks it updated.
func (r *Rooms) userLocked(user string) *lastCall {
	r.seq++
	u, ok := r.users[user]
	if !ok {
		if len(r.users) >= r.maxUsers {
			evictOldest(r.users, func(u *lastCall) uint64 { return u.touched })
		}
		u = &lastCall{}
		r.users[user] = u
	}
	u.touched = r.seq
	return u
}

// evictOldest deletes the entry with the smallest touched.
func evictOldest[V any](m map[string]V, touched func(V) uint64) {
	var oldest string
	var min uint64
	first := true
	for k, v := range m {
		if t := touched(v); first || t < min {
			oldest, min, first = k, t, false
		}
	}
	delete(m, oldest)
}

// roomLocked returns roomID's entry, made (and the least recently updated
// one evicted past maxRooms) if needed, and marks it updated.
func (r *Rooms) roomLocked(roomID string) *room {
	r.seq++
	rm, ok := r.rooms[roomID]
	if !ok {
		if len(r.rooms) >= r.maxRooms {
			evictOldest(r.rooms, func(o *room) uint64 { return o.touched })
		}
		rm = &room{members: make(map[string]Member)}
		r.rooms[roomID] = rm
	}
	rm.touched = r.seq
	return rm
}
