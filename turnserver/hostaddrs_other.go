//go:build !linux

package turnserver

// addrEvents has no event source here: the periodic re-read alone tracks
// the host's addresses.
func addrEvents() (changed <-chan struct{}, stop func(), err error) {
	return nil, func() {}, nil
}
