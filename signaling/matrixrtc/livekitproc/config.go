package livekitproc

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/icebox-voip/icebox/internal/fileutil"
)

// ConfigFile is livekit-server's config file's name in the managed
// LiveKit's directory.
const ConfigFile = "livekit.yaml"

// ServerConfig is what icebox tells livekit-server; WriteConfig turns it
// into livekit-server's own config file.
type ServerConfig struct {
	Bind netip.Addr // the signal port's address (bind_addresses)
	Port int        // the signal port (HTTP, WebSocket, room API)
	// NodeIP is advertised in ICE candidates; invalid = LiveKit picks a
	// local address. External IP discovery (STUN to the internet) is off.
	NodeIP     netip.Addr
	TCPPort    int // ICE/TCP media port, on every interface; 0 = no ICE over TCP
	UDPMin     int // ICE/UDP media port range
	UDPMax     int
	Keys       Keys   // only the key and its file go into the config
	WebhookURL string // where LiveKit posts its events, signed with Keys
	LogLevel   string // debug, info, warn, error
	// TURNServers are handed to LiveKit's clients (rtc.turn_servers); nil =
	// none. See TURNServer.
	TURNServers []TURNServer
}

// TURNServer is one entry of livekit-server's rtc.turn_servers: a TURN
// server LiveKit tells its clients about. With SecretFile, LiveKit reads a
// TURN REST shared secret from that file (which others must not be able to
// read: LiveKit checks) and mints per-participant credentials valid for
// TTL seconds; the file is the keystore's, never written here.
type TURNServer struct {
	Host       string `json:"host"`
	Port       int    `json:"port"`
	Protocol   string `json:"protocol"` // udp, tcp or tls
	SecretFile string `json:"secret_file,omitempty"`
	TTL        int    `json:"ttl,omitempty"` // seconds; LiveKit's default 14400
}

// fileConfig is the subset of livekit-server v1.13.5's config
// (pkg/config/config.go, YAML; it refuses unknown keys) that icebox sets;
// everything else keeps LiveKit's defaults.
type fileConfig struct {
	Port          int         `json:"port"`
	BindAddresses []string    `json:"bind_addresses"`
	RTC           fileRTC     `json:"rtc"`
	Room          fileRoom    `json:"room"`
	KeyFile       string      `json:"key_file"`
	WebHook       fileWebhook `json:"webhook"`
	Logging       fileLogging `json:"logging"`
}

type fileRTC struct {
	TCPPort        int    `json:"tcp_port"`
	PortRangeStart int    `json:"port_range_start"`
	PortRangeEnd   int    `json:"port_range_end"`
	NodeIP         string `json:"node_ip,omitempty"`
	// UseExternalIP off: the node IP is the configured one, never a STUN
	// server's idea of it (and no request leaves for one at start).
	UseExternalIP bool         `json:"use_external_ip"`
	TURNServers   []TURNServer `json:"turn_servers,omitempty"`
}

// fileRoom: rooms are made by the authorization service for users of
// full-access homeservers only (lk-jwt-service's advice), so a JWT must
// not create one by joining it.
type fileRoom struct {
	AutoCreate bool `json:"auto_create"`
}

type fileWebhook struct {
	APIKey string   `json:"api_key"`
	URLs   []string `json:"urls"`
}

type fileLogging struct {
	Level string `json:"level"`
	JSON  bool   `json:"json"`
}

// Render returns livekit-server's config file for c.
func (c ServerConfig) Render() ([]byte, error) {
	if c.Port == 0 || c.UDPMin == 0 || c.UDPMax < c.UDPMin || !c.Bind.IsValid() {
		return nil, errors.New("livekitproc: config: Bind, Port and UDPMin..UDPMax are required")
	}
	if c.Keys.APIKey == "" || c.Keys.File == "" || c.WebhookURL == "" {
		return nil, errors.New("livekitproc: config: Keys and WebhookURL are required")
	}
	for i, t := range c.TURNServers {
		if t.Host == "" || t.Port < 1 || t.Port > 65535 || (t.Protocol != "udp" && t.Protocol != "tcp" && t.Protocol != "tls") {
			return nil, fmt.Errorf("livekitproc: config: turn server %d: want host, port 1..65535 and protocol udp, tcp or tls", i)
		}
	}
	f := fileConfig{
		Port:          c.Port,
		BindAddresses: []string{c.Bind.String()},
		RTC: fileRTC{
			TCPPort:        c.TCPPort,
			PortRangeStart: c.UDPMin,
			PortRangeEnd:   c.UDPMax,
			TURNServers:    c.TURNServers,
		},
		KeyFile: c.Keys.File,
		WebHook: fileWebhook{APIKey: c.Keys.APIKey, URLs: []string{c.WebhookURL}},
		// JSON lines: one log record per line, whatever the message holds.
		Logging: fileLogging{Level: c.LogLevel, JSON: true},
	}
	if c.NodeIP.IsValid() {
		f.RTC.NodeIP = c.NodeIP.String()
	}
	// JSON, which YAML reads as is: a YAML encoder would make the linker
	// keep every MarshalYAML method of LiveKit's protocol types (≈ 0.9 MB).
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("livekitproc: config: %w", err)
	}
	b = append([]byte("# Written by icebox from its configuration at every start; edits are lost.\n"), b...)
	return append(b, '\n'), nil
}

// WriteConfig writes livekit-server's config file to path (0600: it names
// the key file and the webhook URL).
func WriteConfig(path string, c ServerConfig) error {
	b, err := c.Render()
	if err != nil {
		return err
	}
	if err := fileutil.WriteFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("livekitproc: config: %w", err)
	}
	return nil
}
