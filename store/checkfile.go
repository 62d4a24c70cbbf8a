package store

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's on-disk meta page (bbolt v1, format version 2; stable since
// boltdb): a 16-byte page header, then magic, version, page size, flags,
// the root bucket (root pgid, sequence), the freelist pgid, the high-water
// mark pgid, the txid and an FNV-64a checksum of the fields before it.
// Pages 0 and 1 are the two meta pages, written alternately.
const (
	metaMagic    = 0xED0CDAED
	metaVersion  = 2
	metaOffMagic = 16
	metaOffPSize = 24
	metaOffPgid  = 56
	metaOffTxid  = 64
	metaOffSum   = 72
	metaEnd      = 80
)

// checkFile refuses a file that bbolt would map and then fault or panic on:
// one shorter than its newest valid meta page says (a truncated copy, a
// full disk), or one with no valid meta page at all. bbolt checks neither
// before it maps the file, and then reads pages past its end.
func checkFile(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	m0, err := readMeta(f, 0)
	if err != nil {
		return err
	}
	// The second meta page starts one page in. A crash while bbolt wrote
	// the first leaves it invalid, and bbolt then opens the file from the
	// second, guessing the page size: so does this check.
	offsets := []int64{int64(m0.pageSize)}
	if !m0.valid {
		offsets = []int64{int64(os.Getpagesize()), 4096, 16384, 65536}
	}
	best := m0
	for _, off := range offsets {
		m1, err := readMeta(f, off)
		if err != nil {
			return err
		}
		if m1.valid && int64(m1.pageSize) == off && (!best.valid || m1.txid > best.txid) {
			best = m1
			break
		}
	}
	if !best.valid {
		return fmt.Errorf("%w: no valid bbolt meta page (%d bytes)", ErrCorrupt, size)
	}
	if need := int64(best.pgid) * int64(best.pageSize); size < need {
		return fmt.Errorf("%w: the file is truncated: %d bytes, its metadata needs %d", ErrCorrupt, size, need)
	}
	return nil
}

type meta struct {
	valid    bool
	pageSize uint32
	pgid     uint64
	txid     uint64
}

// readMeta reads the meta page at off; a short or invalid one is returned
// with valid false.
func readMeta(f *os.File, off int64) (meta, error) {
	buf := make([]byte, metaEnd)
	if _, err := f.ReadAt(buf, off); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return meta{}, nil
		}
		return meta{}, fmt.Errorf("read meta page: %w", err)
	}
	le := binary.NativeEndian // bbolt writes its structs in the host's order
	m := meta{
		pageSize: le.Uint32(buf[metaOffPSize:]),
		pgid:     le.Uint64(buf[metaOffPgid:]),
		txid:     le.Uint64(buf[metaOffTxid:]),
	}
	h := fnv.New64a()
	h.Write(buf[metaOffMagic:metaOffSum])
	m.valid = le.Uint32(buf[metaOffMagic:]) == metaMagic &&
		le.Uint32(buf[metaOffMagic+4:]) == metaVersion &&
		m.pageSize >= 512 && m.pageSize&(m.pageSize-1) == 0 &&
		h.Sum64() == le.Uint64(buf[metaOffSum:])
	return m, nil
}
