package matrix

import "sync"

// inviteWaiters are the WaitInviteSent calls in progress, by call ID.
type inviteWaiters struct {
	mu sync.Mutex
	m  map[string][]chan string
}

// add registers a waiter for callID; done unregisters it.
func (w *inviteWaiters) add(callID string) (ch chan string, done func()) {
	ch = make(chan string, 1) // release never blocks
	w.mu.Lock()
	if w.m == nil {
		w.m = make(map[string][]chan string)
	}
	w.m[callID] = append(w.m[callID], ch)
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		list := w.m[callID]
		for i, c := range list {
			if c == ch {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(w.m, callID)
		} else {
			w.m[callID] = list
		}
	}
}

// release hands eventID to every waiter of callID ("": the invite was
// dropped).
func (w *inviteWaiters) release(callID, eventID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range w.m[callID] {
		ch <- eventID
	}
	delete(w.m, callID)
}

// len counts the registered waiters (tests).
func (w *inviteWaiters) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range w.m {
		n += len(l)
	}
	return n
}
