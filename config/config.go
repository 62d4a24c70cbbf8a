package config

import (
	_ "embed"
	"time"
)

// Config is icebox's whole configuration. Every field's comment states its
// default; Default returns them, and icebox.example.yaml (DefaultYAML) spells
// them out.
type Config struct {
	StateDir string `yaml:"state_dir"` // database and generated secrets. Default: "./data"
	// DrainTimeout is how long SIGTERM waits for allocations and calls to
	// end before exiting; keep it below systemd's TimeoutStopSec. Default: 60s
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	Log          Log           `yaml:"log"`
	TURN         TURN          `yaml:"turn"`
	Credentials  Credentials   `yaml:"credentials"`
	HTTP         HTTP          `yaml:"http"`
	ICEServers   ICEServers    `yaml:"ice_servers"`
	Auth         Auth          `yaml:"auth"`
	Calls        Calls         `yaml:"calls"`
	Matrix       Matrix        `yaml:"matrix"`
	MatrixRTC    MatrixRTC     `yaml:"matrixrtc"`
	ACME         ACME          `yaml:"acme"`  // certificates for listeners with tls.acme (config/acme.go)
	Store        Store         `yaml:"store"` // where state is kept: bbolt or PostgreSQL (config/store.go)
}

// Log configures the process's logger.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error. Default: "info"
	Format string `yaml:"format"` // auto|json|console. Default: "auto" (console on a terminal, else JSON)
}

// TURN configures the embedded TURN relay.
type TURN struct {
	Realm                 string        `yaml:"realm"` // Default: "icebox.local"
	Listen                Listen        `yaml:"listen"`
	UDPSockets            int           `yaml:"udp_sockets"`   // 0 = one per CPU. Default: 0; max 64
	SocketBuffer          int           `yaml:"socket_buffer"` // bytes of SO_RCVBUF/SO_SNDBUF per socket. Default: 4194304 (4 MiB); 0 = kernel default
	RecvBatch             int           `yaml:"recv_batch"`    // datagrams one recvmmsg may read from one UDP socket (listener or relay); 1 = one per read. Default: 64; max 256 (the relay loop holds 256 datagrams)
	TLS                   TLSFiles      `yaml:"tls"`
	Relay                 Relay         `yaml:"relay"`
	AllowedPeers          []string      `yaml:"allowed_peers"`           // CIDRs or bare IPs. Default: none
	DeniedPeers           []string      `yaml:"denied_peers"`            // CIDRs or bare IPs added to the built-in deny-list. Default: none
	AllowLoopbackPeers    bool          `yaml:"allow_loopback_peers"`    // test-only. Default: false
	MaxAllocationDuration time.Duration `yaml:"max_allocation_duration"` // Default: 12h
	ErrorRate             float64       `yaml:"error_rate"`              // STUN error responses per second per source IP on UDP (reflection guard); 0 = unlimited. Default: 5
	ErrorBurst            int           `yaml:"error_burst"`             // Default: 20
	// Binding success responses per second per source (IPv4 address, IPv6 /64) on UDP; 0 = unlimited.
	// A browser sends a few Bindings a second per candidate pair, so the default leaves a whole
	// office behind one NAT address room while capping a spoofed flood's 2–3× reflection. Default: 50
	BindingRate  float64 `yaml:"binding_rate"`
	BindingBurst int     `yaml:"binding_burst"` // Default: 200
	Quotas       Quotas  `yaml:"quotas"`
	Mux          Mux     `yaml:"mux"` // one port for TURN/TCP, TURN/TLS and the API (config/mux.go)
	// ProxyProtocol reads PROXY protocol v1/v2 headers from load balancers
	// in front of turn.listen.tcp and turn.listen.tls (as turn.mux's does
	// on the shared port). Default: trusted: [] (refused from everyone)
	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`

	// KernelPath relays bound channels' ChannelData in the kernel (eBPF at
	// tc ingress; Linux ≥ 6.6 with CAP_BPF and CAP_NET_ADMIN; a wildcard
	// listener or relay address is served as the source the kernel picks):
	// "off", "auto" (on where it loads, else user space, the reason logged
	// once) or "required" (start-up fails without it). Default: "off"
	KernelPath string `yaml:"kernel_path"`

	// KernelPathMode chooses the kernel path's hook per interface, once at
	// start and for each interface that appears later (logged per
	// interface): "auto" (native XDP where the driver has it and the
	// interface forwards IPv4, veth excepted; tc ingress elsewhere), "xdp"
	// (native XDP on every interface whose driver takes it, veth
	// included: a veth's peer must then run XDP or GRO itself; tc
	// elsewhere) or "tc" (tc ingress only: tcx, or clsact/cls_bpf before
	// Linux 6.6). Default: "auto" — it picks XDP only where XDP can send
	// (the next hop is looked up with bpf_fib_lookup, which answers only
	// for a forwarding device) and leaves veth, where an XDP frame is
	// dropped unless the other end runs XDP too, to tc.
	KernelPathMode string `yaml:"kernel_path_mode"`
	// UDPGRO asks the kernel for coalesced receives (UDP_GRO) on the UDP
	// listener and relay sockets: a run of datagrams from one source
	// arrives as one read and is split in user space. "on", "off" or
	// "auto" (on unless turn.kernel_path is auto or required: a coalesced
	// packet is too big for the kernel path, which leaves it to user
	// space). Measured, it saved no CPU (docs/deploy.md#udp-gro). Default: "off"
	UDPGRO string `yaml:"udp_gro"`
}

// Listen lists the TURN listen addresses, "host:port" with an IP or empty host.
type Listen struct {
	UDP []string `yaml:"udp"` // Default: ["0.0.0.0:3478"]
	TCP []string `yaml:"tcp"` // Default: ["0.0.0.0:3478"]
	TLS []string `yaml:"tls"` // Default: [] (e.g. ["0.0.0.0:5349"]; needs turn.tls)
}

// TLSFiles names the PEM certificate chain and key for the TLS listeners.
type TLSFiles struct {
	CertFile string `yaml:"cert_file"` // Default: ""
	KeyFile  string `yaml:"key_file"`  // Default: ""
	ACME     bool   `yaml:"acme"`      // get the certificate from the CA of the acme section instead of files. Default: false
}

// Relay configures the relayed-transport addresses.
type Relay struct {
	BindIP   string `yaml:"bind_ip"`   // Default: "0.0.0.0"
	PublicIP string `yaml:"public_ip"` // advertised relay address for 1:1 NAT. Default: "" (the bind IP, or the host's first global address)
	MinPort  int    `yaml:"min_port"`  // Default: 49152
	MaxPort  int    `yaml:"max_port"`  // Default: 65535
}

// Quotas limit the number of allocations.
type Quotas struct {
	PerUser int `yaml:"per_user"` // allocations per user. Default: 10
	PerCall int `yaml:"per_call"` // allocations per call. Default: 8
	Total   int `yaml:"total"`    // Default: 10000

	// Bandwidth limits: bits per second of relayed UDP payload, each
	// direction (to the peers, from the peers) on its own, as token
	// buckets; 0 = unlimited. Per-user overrides: PUT
	// /admin/users/{user}/bandwidth. TCP relays (RFC 6062) are not limited.
	MaxBPSPerAllocation int64 `yaml:"max_bps_per_allocation"` // Default: 0
	MaxBPSPerUser       int64 `yaml:"max_bps_per_user"`       // all of a user's allocations together. Default: 0
	MaxBPSTotal         int64 `yaml:"max_bps_total"`          // Default: 0
	// BandwidthBurst is how far ahead of its rate a limit may run: R×burst
	// bits pass at once after a quiet spell (a video key frame). 10ms..10s.
	BandwidthBurst time.Duration `yaml:"bandwidth_burst"` // Default: 500ms
}

// Credentials configures the TURN REST credentials keyring.
type Credentials struct {
	TTL     time.Duration `yaml:"ttl"`     // Default: 24h
	Secrets []Secret      `yaml:"secrets"` // first = active (signs), the rest accepted. Default: [{kid: k1, compat: true}] (generated into state_dir)
}

// Secret is one keyring entry. At most one of Secret and SecretFile is set;
// with neither, the caller generates the secret (into state_dir).
type Secret struct {
	KID        string `yaml:"kid"`         // [a-z0-9]{1,16}, unique
	SecretFile string `yaml:"secret_file"` // file holding the secret (surrounding whitespace trimmed); mode 0600 or stricter
	Secret     string `yaml:"secret"`      // the secret inline; at least 16 bytes
	Compat     bool   `yaml:"compat"`      // verifies usernames without a kid (Synapse, Dendrite, coturn); at most one
}

// HTTP configures the HTTP API listener.
type HTTP struct {
	Listen       string `yaml:"listen"`         // Default: "127.0.0.1:8080"
	MaxBodyBytes int64  `yaml:"max_body_bytes"` // largest request body accepted. Default: 1048576 (1 MiB); 1 KiB..64 MiB
	// TLS serves the API over HTTPS when both files are set (reloaded on
	// SIGHUP and when the files change). Default: none (plain HTTP, for
	// loopback or behind a reverse proxy).
	TLS TLSFiles `yaml:"tls"`
	// UI serves the embedded web pages under /ui/ (ICE test, call demo,
	// status): static files that ask for an API token, so they expose
	// nothing without one. Default: true.
	UI bool `yaml:"ui"`

	CORS CORS `yaml:"cors"` // browser clients on other origins (cors.go)
	// ProxyProtocol reads PROXY protocol v1/v2 headers from load balancers
	// in front of http.listen (TCP mode): the client's address then counts
	// for rate limits and logs. Default: trusted: [] (refused from everyone)
	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`
}

// ICEServers configures what /calls/ice_servers tells clients.
type ICEServers struct {
	Hostname string           `yaml:"hostname"` // what clients are told. Default: "" = relay.public_ip, else the TURN listen address
	External []ExternalServer `yaml:"external"` // extra servers added to /calls/ice_servers. Default: none
}

// ExternalServer is an ICE server run by someone else, passed on to clients
// as is.
type ExternalServer struct {
	URLs       []string `yaml:"urls"` // stun:, stuns:, turn: or turns: URLs
	Username   string   `yaml:"username"`
	Credential string   `yaml:"credential"`
}

// Auth configures how API clients authenticate (bearer tokens). With no
// static token, no JWT secret and no Matrix token checking, every API
// request is refused.
type Auth struct {
	StaticTokens []StaticToken `yaml:"static_tokens"` // Default: none
	JWT          JWT           `yaml:"jwt"`
	MatrixTokens MatrixTokens  `yaml:"matrix_tokens"`
}

// MatrixTokens accepts Matrix access tokens as API bearer tokens: a token
// that is neither a static token nor a JWT is checked with the configured
// homeserver's /_matrix/client/v3/account/whoami, and the answer cached.
// Effective only when matrix.enabled.
type MatrixTokens struct {
	Enabled       bool          `yaml:"enabled"`        // Default: true (when matrix.enabled)
	Cache         time.Duration `yaml:"cache"`          // how long a valid token is trusted without asking again; a revoked token works at most this long. Default: 60s; 0..10m (0 = ask every time)
	NegativeCache time.Duration `yaml:"negative_cache"` // how long a refused token is refused without asking again. Default: 10s; 0..1m
}

// StaticToken is one fixed bearer token, known by its hash: the token itself
// is never in the config, so a leaked config file leaks no credential.
type StaticToken struct {
	SHA256 string `yaml:"sha256"` // hex SHA-256 of the token (64 hex characters, e.g. from `printf %s "$TOKEN" | sha256sum`)
	User   string `yaml:"user"`   // user ID the token authenticates
	Admin  bool   `yaml:"admin"`  // may use /admin/*. Default: false
}

// JWT configures HS256 JSON Web Tokens minted by the host application
// ("sub" = user ID, "exp" required). At most one of HS256Secret and
// HS256SecretFile is set; with neither, JWTs are refused.
type JWT struct {
	HS256Secret     string        `yaml:"hs256_secret"`      // at least 32 bytes. Default: "" (JWT off)
	HS256SecretFile string        `yaml:"hs256_secret_file"` // file holding the secret (surrounding whitespace trimmed); mode 0600 or stricter. Default: ""
	Issuer          string        `yaml:"issuer"`            // required "iss" if set. Default: "" (not checked)
	Audience        string        `yaml:"audience"`          // required in "aud" if set. Default: "" (not checked)
	AdminClaim      string        `yaml:"admin_claim"`       // boolean claim that grants admin when true. Default: "" (JWTs are never admin)
	MaxTTL          time.Duration `yaml:"max_ttl"`           // refuse tokens whose exp is further than this from now; 0 = no limit. Default: 24h
}

// Calls configures call signaling.
type Calls struct {
	InviteLifetime    time.Duration `yaml:"invite_lifetime"`     // lifetime of an invite whose client gives none. Default: 60s; 5s..10m
	MaxInviteLifetime time.Duration `yaml:"max_invite_lifetime"` // upper bound for a client's lifetime_ms. Default: 5m; 5s..10m
	InitiateRate      float64       `yaml:"initiate_rate"`       // call initiations per second per user. Default: 0.5
	InitiateBurst     int           `yaml:"initiate_burst"`      // initiations a user may make at once before the rate applies. Default: 5
	// Retention is how long an ended call stays stored (GET /calls/{id},
	// listings) before a periodic sweep deletes it with its index entries;
	// its revocation is kept apart until its credentials expire. Default:
	// 72h; 1m..8760h
	Retention time.Duration `yaml:"retention"`
}

// Matrix configures the Matrix VoIP bridge. Default: off.
//
// The bridge acts as one service user, through a device of its own: an
// access token copied from another client (Element, say) shares that
// client's device and breaks end-to-end encryption for both. There is
// exactly one way to log in, and one is required when Enabled:
//
//   - an access token (AccessToken or AccessTokenFile): the token of a
//     device made for icebox alone;
//   - or a password (Password or PasswordFile): icebox logs in once as a new
//     device named "icebox" and keeps that session (access token and device
//     ID) in StateDir/matrix/session.json. The password is also what lets it
//     upload its cross-signing keys.
//
// Setting both a token and a password, both AccessToken and
// AccessTokenFile, or both Password and PasswordFile is an error.
type Matrix struct {
	Enabled         bool   `yaml:"enabled"`           // Default: false
	HomeserverURL   string `yaml:"homeserver_url"`    // base URL, http(s) without a path, e.g. https://matrix.your.domain; required when enabled. Default: ""
	ServiceUser     string `yaml:"service_user"`      // the bot's user ID, @localpart:server_name; required when enabled. Default: ""
	AccessToken     string `yaml:"access_token"`      // the service user's own device's token, inline; prefer access_token_file. Default: ""
	AccessTokenFile string `yaml:"access_token_file"` // file holding the token (surrounding whitespace trimmed); mode 0600 or stricter. Default: ""
	Password        string `yaml:"password"`          // the service user's password, inline; prefer password_file. Default: ""
	PasswordFile    string `yaml:"password_file"`     // file holding the password (surrounding whitespace trimmed, so a trailing newline is not part of it); mode 0600 or stricter. Default: ""
	DeviceID        string `yaml:"device_id"`         // the access token's device, checked against /whoami; not used with a password, whose session records its device. Default: "" (learned from /whoami)
	VoIP            VoIP   `yaml:"voip"`
	// RequireEncryption refuses to send call events into a room that is
	// not end-to-end encrypted, and ignores unencrypted call events; rooms
	// icebox creates are always encrypted. The bridge waits until it knows
	// a room's encryption state before its first send into it. Default: true
	RequireEncryption bool `yaml:"require_encryption"`
	// InviteWait is how long POST /calls/initiate waits for the Matrix
	// invite to go out, to report its event ID; the call does not depend
	// on it. Default: 2s; 0..10s (0 = never wait)
	InviteWait time.Duration `yaml:"invite_wait"`

	// CallProtocol is which protocol a conversation's calls use when the
	// conversation does not say (admin API call_protocol): "legacy" (1:1
	// m.call.* events), "matrixrtc" (MatrixRTC: call membership, LiveKit
	// media) or "auto" (MatrixRTC when the room has a live MatrixRTC call
	// or its members' last calls were, else legacy). Default: "legacy", so that
	// an upgrade changes no existing installation's calls (see README).
	CallProtocol string `yaml:"call_protocol"`
}

// The values of matrix.call_protocol and of a conversation's call_protocol.
const (
	CallProtocolLegacy    = "legacy"
	CallProtocolMatrixRTC = "matrixrtc"
	CallProtocolAuto      = "auto"
)

// MatrixRTC configures the MatrixRTC authorization service (Element Call,
// Element X): the lk-jwt-service API that trades a Matrix OpenID token for a
// LiveKit JWT. Default: off.
type MatrixRTC struct {
	Enabled bool `yaml:"enabled"` // Default: false
	// BasePath is where /sfu/get, /get_token and /healthz are served on the
	// HTTP listener; the homeserver's .well-known livekit_service_url is
	// https://<this host><base_path>. Default: "/livekit/jwt"
	BasePath string `yaml:"base_path"`
	// FullAccessHomeservers are the server names whose users may create
	// LiveKit rooms; others may only join rooms that exist. ["*"] alone =
	// every homeserver. Default: none
	FullAccessHomeservers []string `yaml:"full_access_homeservers"`
	// HomeserverURLs maps a server name to the base URL of its federation
	// API, skipping discovery (.well-known/matrix/server, SRV, port 8448),
	// e.g. for a homeserver on the same host. Default: none
	HomeserverURLs map[string]string `yaml:"homeserver_urls"`
	LiveKit        LiveKit           `yaml:"livekit"`
	JWTLifetime    time.Duration     `yaml:"jwt_lifetime"`   // lifetime of an issued LiveKit JWT. Default: 1h; 1m..24h
	VerifyTimeout  time.Duration     `yaml:"verify_timeout"` // bound on one OpenID verification at a homeserver. Default: 10s; 1s..60s

	// Discovery, verification cache and room policy.

	// PublicURL is where clients reach icebox's HTTP API from outside
	// (scheme://host[:port], through the reverse proxy): the
	// .well-known livekit_service_url is PublicURL + BasePath, and
	// `icebox check` asks PublicURL + BasePath + "/healthz". Default: ""
	// (unknown: `icebox matrixrtc well-known` then needs --public-url)
	PublicURL string `yaml:"public_url"`
	// RequireJoined refuses a token to a user who is not joined to the
	// Matrix room named in the request, asked as icebox's Matrix service
	// user (matrix.enabled with an access token; the service user must be
	// in the room). lk-jwt-service does not check. Default: false
	RequireJoined bool `yaml:"require_joined"`
	// VerifyCacheTTL keeps a successful OpenID verification this long
	// (keyed by a hash of the token, never the token), so a client asking
	// again with the same token is not sent to its homeserver again; 0 =
	// no cache. Failures are never cached. Default: 1m; 0..5m
	VerifyCacheTTL time.Duration `yaml:"verify_cache_ttl"`

	// The MatrixRTC gateway's call path (gateway.go).
	Gateway Gateway `yaml:"gateway"`
}

// LiveKit is the LiveKit server the issued JWTs are for: in mode external
// one you run (url, api_key and a secret are required); in mode managed a
// livekit-server icebox runs as its child (see LiveKitManaged: the key and
// secret are generated into state_dir, url defaults to the child's address).
type LiveKit struct {
	URL           string `yaml:"url"`             // what clients connect to, ws:// or wss://; required when matrixrtc.enabled in mode external. Default: ""
	APIKey        string `yaml:"api_key"`         // Default: ""
	APISecret     string `yaml:"api_secret"`      // inline; prefer api_secret_file. Default: ""
	APISecretFile string `yaml:"api_secret_file"` // file holding the API secret (whitespace trimmed); mode 0600 or stricter. Default: ""

	TURN LiveKitTURN `yaml:"turn"` // icebox's relay as the SFU's TURN, with scoped credentials (sfuturn.go)
	// Mode is "external" (a LiveKit server you run, LiveKit Cloud
	// included) or "managed" (icebox runs livekit-server). Default: "external"
	Mode    string         `yaml:"mode"`
	Managed LiveKitManaged `yaml:"managed"`
}

// LiveKitManaged configures the livekit-server icebox runs in
// matrixrtc.livekit.mode: managed. icebox writes its config file
// (state_dir/livekit/livekit.yaml, 0600) from these keys, generates its API
// key and secret (state_dir/livekit/keys.yaml, 0600, kept across restarts),
// points its webhooks at icebox's HTTP listener, starts it, restarts it
// with backoff when it dies and stops it on shutdown.
type LiveKitManaged struct {
	// Binary is the livekit-server executable (scripts/install-livekit.sh
	// builds the pinned version). Default: "" = livekit-server on PATH, else
	// $GOPATH/bin/livekit-server
	Binary string `yaml:"binary"`
	// Bind is the IP the signal port (clients' WebSocket, the room API)
	// listens on; production puts a TLS reverse proxy in front. Default: "127.0.0.1"
	Bind string `yaml:"bind"`
	Port int    `yaml:"port"` // the signal port (HTTP and WebSocket). Default: 7880
	// NodeIP is the address LiveKit advertises in its ICE candidates
	// (rtc.node_ip; external IP discovery is off). Default: "" =
	// turn.relay.public_ip when set, else LiveKit picks a local address
	NodeIP string `yaml:"node_ip"`
	// RTCTCPPort is LiveKit's ICE/TCP media port (rtc.tcp_port), on every
	// interface (LiveKit has no bind address for it); 0 = no ICE over TCP.
	// Default: 7881
	RTCTCPPort int `yaml:"rtc_tcp_port"`
	// RTCUDPPorts is LiveKit's ICE/UDP media port range "min-max"
	// (rtc.port_range_start..end), on every interface; it must not overlap
	// turn.relay.min_port..max_port. Default: "47000-48999"
	RTCUDPPorts string `yaml:"rtc_udp_ports"`
	// LogLevel is livekit-server's log level (debug, info, warn, error); its
	// lines go to icebox's log at debug level. Default: "info"
	LogLevel string `yaml:"log_level"`
}

// VoIP configures the legacy 1:1 Matrix VoIP events (m.call.*).
type VoIP struct {
	Enabled bool   `yaml:"enabled"` // bridge calls to m.call.* events (when matrix.enabled). Default: true
	Version string `yaml:"version"` // VoIP version spoken; only "1" is accepted. Default: "1"
}

// Default returns the configuration with every field at its default.
//
// Lists that default to "none" are empty rather than nil, so that Default
// equals what DefaultYAML decodes to (its "key: []").
func Default() Config {
	return Config{
		StateDir:     "./data",
		DrainTimeout: 60 * time.Second,
		Log:          Log{Level: "info", Format: "auto"},
		TURN: TURN{
			Realm: "icebox.local",
			Listen: Listen{
				UDP: []string{"0.0.0.0:3478"},
				TCP: []string{"0.0.0.0:3478"},
				TLS: []string{},
			},
			UDPSockets:   0,
			SocketBuffer: 4 << 20,
			RecvBatch:    64,
			Relay: Relay{
				BindIP:  "0.0.0.0",
				MinPort: 49152,
				MaxPort: 65535,
			},
			AllowedPeers:          []string{},
			DeniedPeers:           []string{},
			MaxAllocationDuration: 12 * time.Hour,
			ErrorRate:             5,
			ErrorBurst:            20,
			BindingRate:           50,
			BindingBurst:          200,
			Quotas:                Quotas{PerUser: 10, PerCall: 8, Total: 10000, BandwidthBurst: 500 * time.Millisecond},
			Mux:                   defaultMux(),
			ProxyProtocol:         ProxyProtocol{Trusted: []string{}},
			KernelPath:            "off",
			KernelPathMode:        "auto",
			UDPGRO:                "off",
		},
		Credentials: Credentials{
			TTL:     24 * time.Hour,
			Secrets: []Secret{{KID: "k1", Compat: true}},
		},
		HTTP: HTTP{Listen: "127.0.0.1:8080", MaxBodyBytes: 1 << 20, UI: true, CORS: CORS{AllowedOrigins: []string{}},
			ProxyProtocol: ProxyProtocol{Trusted: []string{}}},
		ICEServers: ICEServers{External: []ExternalServer{}},
		Auth: Auth{
			StaticTokens: []StaticToken{},
			JWT:          JWT{MaxTTL: 24 * time.Hour},
			MatrixTokens: MatrixTokens{Enabled: true, Cache: 60 * time.Second, NegativeCache: 10 * time.Second},
		},
		Calls: Calls{
			InviteLifetime:    60 * time.Second,
			MaxInviteLifetime: 5 * time.Minute,
			InitiateRate:      0.5,
			InitiateBurst:     5,
			Retention:         72 * time.Hour,
		},
		Matrix: Matrix{
			VoIP:              VoIP{Enabled: true, Version: "1"},
			RequireEncryption: true,
			InviteWait:        2 * time.Second,
			CallProtocol:      CallProtocolLegacy,
		},
		MatrixRTC: MatrixRTC{
			BasePath:              "/livekit/jwt",
			FullAccessHomeservers: []string{},
			HomeserverURLs:        map[string]string{},
			JWTLifetime:           time.Hour,
			VerifyTimeout:         10 * time.Second,
			VerifyCacheTTL:        time.Minute,
			Gateway:               defaultGateway(),
			LiveKit: LiveKit{
				TURN: defaultLiveKitTURN(),
				Mode: LiveKitModeExternal,
				Managed: LiveKitManaged{
					Bind:        "127.0.0.1",
					Port:        7880,
					RTCTCPPort:  7881,
					RTCUDPPorts: "47000-48999",
					LogLevel:    "info",
				},
			},
		},
		ACME:  defaultACME(),
		Store: defaultStore(),
	}
}

//go:embed icebox.example.yaml
var exampleYAML []byte

// DefaultYAML returns a commented configuration file that lists every key
// with its default value. Loading it yields Default().
func DefaultYAML() []byte {
	return append([]byte(nil), exampleYAML...)
}
