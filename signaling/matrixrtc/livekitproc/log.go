package livekitproc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// maxLogLine bounds one logged line of the child's output; the rest of a
// longer line is dropped (a stack trace comes in many lines).
const maxLogLine = 16 << 10

// logOutput logs each line the child writes, at debug, until r ends. A
// JSON line (livekit-server logs JSON, see WriteConfig) is kept as JSON
// under "livekit"; anything else as text under "line". Redact strings are
// replaced first, so a secret never reaches the log whatever LiveKit
// prints.
func (s *Supervisor) logOutput(r io.Reader) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Log what fits, skip the rest of the line — and the fragment's
			// tail, which could be the start of a secret cut in two.
			s.logLine(line[:max(0, len(line)-s.longestRedact())])
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil {
				return
			}
			continue
		}
		if len(line) > 0 {
			s.logLine(line)
		}
		if err != nil {
			return
		}
	}
}

func (s *Supervisor) logLine(line []byte) {
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 {
		return
	}
	ev := s.log.Debug()
	if !ev.Enabled() {
		return
	}
	line = redact(line, s.cfg.Redact)
	if json.Valid(line) {
		ev.RawJSON("livekit", line).Msg("livekit-server")
		return
	}
	ev.Str("line", string(line)).Msg("livekit-server")
}

func (s *Supervisor) longestRedact() int {
	n := 0
	for _, r := range s.cfg.Redact {
		n = max(n, len(r))
	}
	return n
}

// redact replaces every occurrence of each secret with "[redacted]".
func redact(line []byte, secrets []string) []byte {
	for _, sec := range secrets {
		if sec != "" && bytes.Contains(line, []byte(sec)) {
			line = bytes.ReplaceAll(line, []byte(sec), []byte("[redacted]"))
		}
	}
	return line
}
