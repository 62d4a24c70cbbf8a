package probe

import (
	"time"
)

// Status of one step.
type Status string

const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn" // worked, but something needs attention
	StatusFail Status = "fail"
	StatusSkip Status = "skip" // not run, an earlier step failed
)

// Verdict is the conclusion for one target: VerdictOK, or what is wrong.
type Verdict string

const (
	VerdictOK Verdict = "ok"
	// VerdictResolve: the host name does not resolve.
	VerdictResolve Verdict = "dns_failed"
	// VerdictRefused: nothing listens on the port (ECONNREFUSED, or ICMP
	// port unreachable over UDP).
	VerdictRefused Verdict = "connection_refused"
	// VerdictUnreachable: no answer at all within the timeout (firewall,
	// wrong address, server down).
	VerdictUnreachable Verdict = "unreachable"
	// VerdictTLSName: the certificate does not name the URL's host.
	VerdictTLSName Verdict = "tls_name_mismatch"
	// VerdictTLSExpired: the certificate is expired or not yet valid.
	VerdictTLSExpired Verdict = "tls_expired"
	// VerdictTLSUntrusted: the certificate is signed by an unknown authority.
	VerdictTLSUntrusted Verdict = "tls_untrusted"
	// VerdictTLSHandshake: the TLS handshake failed otherwise.
	VerdictTLSHandshake Verdict = "tls_handshake_failed"
	// VerdictBinding: the STUN binding failed otherwise.
	VerdictBinding Verdict = "binding_failed"
	// VerdictNoCredentials: a TURN URL and nothing to authenticate with.
	VerdictNoCredentials Verdict = "no_credentials"
	// VerdictExpired: the credential's expiry has passed (by our clock) and
	// the server refused it.
	VerdictExpired Verdict = "credentials_expired"
	// VerdictClockSkew: the server refused a fresh credential and accepted a
	// long-lived one from the same secret: its clock is ahead.
	VerdictClockSkew Verdict = "clock_skew"
	// VerdictAuth: the server refused the credential (wrong secret or
	// password).
	VerdictAuth Verdict = "auth_failed"
	// VerdictQuota: the server refused the allocation for quota (486).
	VerdictQuota Verdict = "quota_reached"
	// VerdictAllocate: the allocation failed otherwise.
	VerdictAllocate Verdict = "allocate_failed"
	// VerdictPeerRefused: the server refused a permission for its own relay
	// address (403): its peer policy forbids relay to relay.
	VerdictPeerRefused Verdict = "peer_refused"
	// VerdictPermission: CreatePermission failed otherwise.
	VerdictPermission Verdict = "permission_failed"
	// VerdictNoData: permissions were granted but no packet made it from one
	// relay to the other.
	VerdictNoData Verdict = "relay_no_data"
	// VerdictLoss: packets crossed the relay but too many were lost.
	VerdictLoss Verdict = "relay_loss"
	// VerdictRelayPrivate: the relay address is private while the server was
	// reached on a public one: the server is behind NAT and does not know its
	// public address.
	VerdictRelayPrivate Verdict = "relay_address_private"
)

// Step is one stage of a check.
type Step struct {
	Name     string        `json:"name"` // resolve, connect, tls, binding, allocate, permission, relay
	Status   Status        `json:"status"`
	Duration time.Duration `json:"duration_ns"`
	Detail   string        `json:"detail,omitempty"`
}

// TLSInfo describes the server's certificate.
type TLSInfo struct {
	Version   string    `json:"version"`
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Names     []string  `json:"names"` // DNS and IP subject alternative names
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Verified  bool      `json:"verified"`
	Error     string    `json:"error,omitempty"` // why verification failed
}

// RelayStats are the burst's numbers.
type RelayStats struct {
	Sent     int           `json:"sent"`
	Received int           `json:"received"`
	Loss     float64       `json:"loss"` // 0..1
	RTTMin   time.Duration `json:"rtt_min_ns,omitempty"`
	RTTAvg   time.Duration `json:"rtt_avg_ns,omitempty"`
	RTTMax   time.Duration `json:"rtt_max_ns,omitempty"`
}

// Result is the check of one target.
type Result struct {
	URL       string `json:"url"`
	Transport string `json:"transport"`
	// Server is the address the probe reached (resolved host:port).
	Server string `json:"server,omitempty"`
	// Username is the TURN username used (never the password).
	Username      string      `json:"username,omitempty"`
	Local         string      `json:"local,omitempty"`  // our address towards the server
	Mapped        string      `json:"mapped,omitempty"` // XOR-MAPPED-ADDRESS
	BehindNAT     *bool       `json:"behind_nat,omitempty"`
	Relay         string      `json:"relay,omitempty"`      // our allocation's relayed address
	PeerRelay     string      `json:"peer_relay,omitempty"` // the second allocation's
	TLS           *TLSInfo    `json:"tls,omitempty"`
	Stats         *RelayStats `json:"stats,omitempty"`
	Steps         []Step      `json:"steps"`
	Verdict       Verdict     `json:"verdict"`
	Message       string      `json:"message,omitempty"` // what went wrong, in a sentence
	Hint          string      `json:"hint,omitempty"`    // what to do about it
	Warnings      []string    `json:"warnings,omitempty"`
	credExpiresAt time.Time
}

// OK reports whether the target passed.
func (r *Result) OK() bool { return r.Verdict == VerdictOK }

// Report is the whole check.
type Report struct {
	Started time.Time `json:"started"`
	// Source says where the credentials came from (secret, static,
	// ice_servers URL); never the credentials themselves.
	Source   string        `json:"source,omitempty"`
	Results  []*Result     `json:"results"`
	Warnings []string      `json:"warnings,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	OK       bool          `json:"ok"`
}

// step appends a finished step.
func (r *Result) step(name string, st Status, d time.Duration, detail string) {
	r.Steps = append(r.Steps, Step{Name: name, Status: st, Duration: d, Detail: detail})
}

// fail sets the verdict and records a failed step.
func (r *Result) fail(name string, d time.Duration, v Verdict, msg, hint string) {
	r.step(name, StatusFail, d, msg)
	r.Verdict, r.Message, r.Hint = v, msg, hint
}
