//go:build !linux

package kernelpath

// Path is the loaded kernel path; it cannot exist here.
type Path struct{}

// Open reports ErrUnsupported off Linux.
func Open(Options) (*Path, error) { return nil, ErrUnsupported }

func (*Path) Attachments() []Attachment        { return nil }
func (*Path) Interfaces() []string             { return nil }
func (*Path) Put(Binding) (Binding, error)     { return Binding{}, ErrUnsupported }
func (*Path) Resolve(Binding) (Binding, error) { return Binding{}, ErrUnsupported }
func (*Path) Delete(Binding)                   {}
func (*Path) Counters(uint32) (Counters, bool) { return Counters{}, false }
func (*Path) DeleteCounters(uint32)            {}
func (*Path) Stats() Stats                     { return Stats{} }
func (*Path) Close() error                     { return nil }
