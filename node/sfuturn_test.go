package node_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
	"github.com/icebox-voip/icebox/signaling/httpapi"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
)

// managedTURNConfig is managedConfig with icebox's relay as the managed
// LiveKit's TURN (matrixrtc.livekit.turn.enabled, no peers listed: the
// managed LiveKit's are derived) and loopback peers NOT allowed, so that
// only the SFU scope opens LiveKit's ports on 127.0.0.1.
func managedTURNConfig(t *testing.T, stateDir string) config.Config {
	t.Helper()
	cfg := managedConfig(t, stateDir)
	cfg.MatrixRTC.LiveKit.TURN.Enabled = true
	cfg.MatrixRTC.LiveKit.TURN.TTL = 2 * time.Hour
	cfg.TURN.AllowLoopbackPeers = false
	v := cfg // the checks want real ports
	v.TURN.Listen.UDP, v.TURN.Listen.TCP, v.HTTP.Listen = []string{"127.0.0.1:3478"}, []string{"127.0.0.1:3478"}, "127.0.0.1:8080"
	if err := v.Validate(); err != nil {
		t.Fatalf("managed mode with turn.enabled and no peers: %v", err)
	}
	return cfg
}

// liveKitICE joins a room of the node's managed LiveKit (a token signed
// with its generated keys) and returns the TURN credential its JoinResponse
// gives for url, and the participant's ID.
func liveKitICE(t *testing.T, cfg config.Config, room, identity, turnURL string) (user, pass, sid string) {
	t.Helper()
	keys, err := livekitproc.LoadKeys(filepath.Join(cfg.StateDir, "livekit"))
	if err != nil {
		t.Fatal(err)
	}
	jwt, err := auth.NewAccessToken(keys.APIKey, keys.APISecret).SetIdentity(identity).SetValidFor(time.Minute).
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, RoomCreate: true, Room: room}).ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	join := joinLiveKit(t, "ws://127.0.0.1:"+itoa(cfg.MatrixRTC.LiveKit.Managed.Port), jwt)
	var urls []string
	for _, s := range join.GetIceServers() {
		for _, u := range s.GetUrls() {
			urls = append(urls, u)
			if u == turnURL {
				user, pass = s.GetUsername(), s.GetCredential()
			}
		}
	}
	if user == "" {
		t.Fatalf("LiveKit's JoinResponse has no %s: %v", turnURL, urls)
	}
	return user, pass, join.GetParticipant().GetSid()
}

// turnClient is pion's TURN client over UDP to server, with an allocation.
func turnClient(t *testing.T, server, user, pass string) (*turn.Client, net.PacketConn) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: pc, Username: user, Password: pass, LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate with %s: %v", user, err)
	}
	t.Cleanup(func() { relay.Close() })
	return c, relay
}

// ask sends an authenticated request of method on c's allocation (the
// nonce from a first unauthenticated try) and returns the error code of
// the answer, 0 for success.
func ask(t *testing.T, c *turn.Client, realm, user, pass string, method stun.Method, attrs ...stun.Setter) stun.ErrorCode {
	t.Helper()
	build := func(extra ...stun.Setter) *stun.Message {
		s := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
		return stun.MustBuild(append(s, extra...)...)
	}
	res, err := c.PerformTransaction(build(stun.Fingerprint), c.TURNServerAddr(), false)
	if err != nil {
		t.Fatalf("%v: %v", method, err)
	}
	var nonce stun.Nonce
	if err := nonce.GetFrom(res.Msg); err != nil {
		t.Fatalf("%v: no nonce in the answer to an unauthenticated request", method)
	}
	res, err = c.PerformTransaction(build(stun.NewUsername(user), stun.NewRealm(realm), nonce,
		stun.NewLongTermIntegrity(user, realm, pass), stun.Fingerprint), c.TURNServerAddr(), false)
	if err != nil {
		t.Fatalf("%v: %v", method, err)
	}
	if res.Msg.Type.Class == stun.ClassSuccessResponse {
		return 0
	}
	var code stun.ErrorCodeAttribute
	if err := code.GetFrom(res.Msg); err != nil {
		t.Fatalf("%v: an error answer without a code", method)
	}
	return code.Code
}

// xorPeerAttr is an XOR-PEER-ADDRESS attribute for a UDP address.
func xorPeerAttr(t *testing.T, a net.Addr) stun.Setter {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return xorPeer(ap)
}

type xorPeer netip.AddrPort

func (p xorPeer) AddTo(m *stun.Message) error {
	ap := netip.AddrPort(p)
	a := stun.XORMappedAddress{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
	return a.AddToAs(m, stun.AttrXORPeerAddress)
}

// TestNodeManagedLiveKitTURN: in managed mode with matrixrtc.livekit.turn
// on and no peers listed, the managed livekit-server hands its
// participants icebox's TURN listeners (UDP and TCP, at the address
// /calls/ice_servers advertises) with credentials minted from the SFU
// secret file; such a credential allocates on icebox, relays both ways to
// the managed LiveKit's UDP port range on its node IP (which, with
// loopback peers not allowed, only the derived SFU scope opens), and is
// refused (403) towards another port of that address and other addresses.
func TestNodeManagedLiveKitTURN(t *testing.T) {
	requireLiveKit(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	cfg := managedTURNConfig(t, stateDir)
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.Nop()})
	poll(t, 30*time.Second, "/readyz 200 with livekit-server up", func() bool { return readyz(t, n) == http.StatusOK })

	udp, tcp := first(n.Addrs.TURNUDP), first(n.Addrs.TURNTCP)
	user, pass, sid := liveKitICE(t, cfg, "turn-room", "@alice:example.org:DEV", "turn:"+udp+"?transport=udp")
	_, tcpPass, _ := liveKitICE(t, cfg, "turn-room", "@bob:example.org:DEV", "turn:"+tcp+"?transport=tcp")
	t.Logf("LiveKit participant %s got TURN username %s", sid, user)
	expiry, gotSID, _ := strings.Cut(user, ":")
	exp, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil || gotSID != sid {
		t.Fatalf("username %q, want <expiry>:%s", user, sid)
	}
	if ttl := time.Until(time.Unix(exp, 0)); ttl < 2*time.Hour-time.Minute || ttl > 2*time.Hour {
		t.Errorf("credential valid for %s, want matrixrtc.livekit.turn.ttl 2h", ttl)
	}
	secret, err := os.ReadFile(keystore.SFUSecretPath(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha1.New, bytes.TrimSpace(secret))
	mac.Write([]byte(user))
	if base64.StdEncoding.EncodeToString(mac.Sum(nil)) != pass || tcpPass == "" {
		t.Errorf("password is not HMAC-SHA1 of the username with the SFU secret file's secret")
	}

	c, relay := turnClient(t, udp, user, pass)
	// A peer on the managed LiveKit's node IP, in its rtc_udp_ports.
	var peer net.PacketConn
	for p := 41099; p >= 41000 && peer == nil; p-- {
		peer, _ = net.ListenPacket("udp4", "127.0.0.1:"+itoa(p))
	}
	if peer == nil {
		t.Fatal("no free port in the managed LiveKit's range 41000-41099")
	}
	defer peer.Close()
	// Other ports of the same address, outside LiveKit's ports: one for a
	// ChannelBind by hand, one for pion's client (whose own ChannelBind
	// to a peer bound already would get a 400 and close the allocation).
	other, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other2, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other2.Close()

	realm := cfg.TURN.Realm
	if code := ask(t, c, realm, user, pass, stun.MethodChannelBind /* a number pion's client never picks */, stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{0x7f, 0xfe, 0, 0}}, xorPeerAttr(t, other2.LocalAddr())); code != stun.CodeForbidden {
		t.Errorf("ChannelBind to another port of LiveKit's address %v: %d, want 403", other2.LocalAddr(), code)
	}
	for _, to := range []string{"127.0.0.2:41050", "192.0.2.7:41050"} {
		addr := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to))
		if code := ask(t, c, realm, user, pass, stun.MethodCreatePermission, xorPeerAttr(t, addr)); code != stun.CodeForbidden {
			t.Errorf("CreatePermission to %s: %d, want 403", to, code)
		}
	}
	// A datagram to the other port first, then to LiveKit's: the relay
	// keeps their order, so once the second arrived the first would have.
	if _, err := relay.WriteTo([]byte("to-other-port"), other.LocalAddr()); err != nil {
		t.Logf("WriteTo another port: %v", err)
	}
	echo(t, relay, peer)
	_ = other.SetReadDeadline(time.Now())
	if n, from, err := other.ReadFrom(make([]byte, 64)); err == nil {
		t.Errorf("another port of LiveKit's address got %d bytes from %v through an SFU credential", n, from)
	}
}

// echo sends a datagram through relay to peer and one back.
func echo(t *testing.T, relay, peer net.PacketConn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	msg := []byte("to-livekit " + t.Name())
	if _, err := relay.WriteTo(msg, peer.LocalAddr()); err != nil {
		t.Fatalf("WriteTo LiveKit's port %v: %v", peer.LocalAddr(), err)
	}
	buf := make([]byte, 1500)
	_ = peer.SetReadDeadline(deadline)
	n, from, err := peer.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("peer in LiveKit's range: %q, %v; want %q", buf[:n], err, msg)
	}
	back := []byte("from-livekit " + t.Name())
	if _, err := peer.WriteTo(back, from); err != nil {
		t.Fatal(err)
	}
	_ = relay.SetReadDeadline(deadline)
	n, _, err = relay.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:n], back) {
		t.Fatalf("relay from LiveKit's port: %q, %v; want %q", buf[:n], err, back)
	}
}

// TestNodeRotateSFUSecretRestartsLiveKit: `icebox keyring rotate` (POST
// /admin/keyring/rotate) rotates the SFU TURN secret, which rewrites the
// secret file and restarts the managed livekit-server (a new PID, not
// counted as a failure); the new child hands out credentials of the new
// secret, which allocate on icebox, while a credential of the old secret
// still does (grace: ttl + max allocation duration).
func TestNodeRotateSFUSecretRestartsLiveKit(t *testing.T) {
	requireLiveKit(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	cfg := managedTURNConfig(t, stateDir)
	cfg.Credentials.Secrets = []config.Secret{{KID: "k1", Compat: true}} // generated: rotate answers 200
	const adminToken = "node-test-admin-token"
	authn, err := httpapi.NewAuthenticator(httpapi.AuthConfig{
		StaticTokens: []httpapi.StaticToken{{SHA256: sha256.Sum256([]byte(adminToken)), User: "admin", Admin: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.Nop(), Registry: reg, Auth: authn})
	poll(t, 30*time.Second, "/readyz 200 with livekit-server up", func() bool { return readyz(t, n) == http.StatusOK })
	before, _ := n.LiveKit()
	udp := first(n.Addrs.TURNUDP)
	turnURL := "turn:" + udp + "?transport=udp"
	oldUser, oldPass, _ := liveKitICE(t, cfg, "rotate-room", "@alice:example.org:DEV", turnURL)
	oldSecret, err := os.ReadFile(keystore.SFUSecretPath(stateDir))
	if err != nil {
		t.Fatal(err)
	}

	k := adminKeyring(t, n.Addrs.HTTP, adminToken)
	if k.SFU == nil || k.SFU.CurrentKID != "sfu1" || len(k.SFU.Keys) != 1 || k.LiveKit == nil || !k.LiveKit.Up || k.LiveKit.PID != before.PID {
		t.Errorf("GET /admin/keyring before rotating: sfu %+v, livekit %+v; want sfu1 alone and LiveKit up as pid %d", k.SFU, k.LiveKit, before.PID)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+n.Addrs.HTTP+"/admin/keyring/rotate", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /admin/keyring/rotate: %d", resp.StatusCode)
	}
	rotated := time.Now()
	poll(t, 30*time.Second, "livekit-server restarted with a new PID", func() bool {
		st, _ := n.LiveKit()
		return st.Ready && st.PID != before.PID && st.PID != 0
	})
	after, _ := n.LiveKit()
	t.Logf("rotate to ready again: %v (pid %d -> %d, restarts counted %d -> %d)",
		time.Since(rotated).Round(time.Millisecond), before.PID, after.PID, before.Restarts, after.Restarts)
	if after.Restarts != before.Restarts {
		t.Errorf("a requested restart counted as a failure: %d -> %d", before.Restarts, after.Restarts)
	}
	k = adminKeyring(t, n.Addrs.HTTP, adminToken)
	if k.SFU == nil || k.SFU.CurrentKID != "sfu2" || len(k.SFU.Keys) != 2 || k.SFU.Keys[1].KID != "sfu1" || k.SFU.Keys[1].RetireAt == nil ||
		k.LiveKit == nil || !k.LiveKit.Up || k.LiveKit.PID != after.PID || k.LiveKit.Restarts != 0 {
		t.Errorf("GET /admin/keyring after rotating: sfu %+v, livekit %+v; want sfu2 current, sfu1 retiring, LiveKit up as pid %d", k.SFU, k.LiveKit, after.PID)
	}
	newSecret, err := os.ReadFile(keystore.SFUSecretPath(stateDir))
	if err != nil || bytes.Equal(newSecret, oldSecret) {
		t.Fatalf("the SFU secret file after rotation: %v, same as before: %v", err, bytes.Equal(newSecret, oldSecret))
	}

	newUser, newPass, _ := liveKitICE(t, cfg, "rotate-room", "@bob:example.org:DEV", turnURL)
	sign := func(secret []byte, user string) string {
		mac := hmac.New(sha1.New, bytes.TrimSpace(secret))
		mac.Write([]byte(user))
		return base64.StdEncoding.EncodeToString(mac.Sum(nil))
	}
	if newPass != sign(newSecret, newUser) {
		t.Errorf("the restarted livekit-server's credential is not signed with the new secret")
	}
	if oldPass != sign(oldSecret, oldUser) {
		t.Errorf("the first credential is not signed with the first secret")
	}
	var peer net.PacketConn
	for p := 41099; p >= 41000 && peer == nil; p-- {
		peer, _ = net.ListenPacket("udp4", "127.0.0.1:"+itoa(p))
	}
	if peer == nil {
		t.Fatal("no free port in the managed LiveKit's range 41000-41099")
	}
	defer peer.Close()
	for name, cred := range map[string][2]string{"new secret": {newUser, newPass}, "old secret (grace)": {oldUser, oldPass}} {
		_, relay := turnClient(t, udp, cred[0], cred[1])
		echo(t, relay, peer)
		t.Logf("%s: allocated and relayed to LiveKit's port", name)
	}
}

// sfuCredential mints a credential as livekit-server does from the SFU
// secret file: "<expiry>:PA_<12 of LiveKit's alphabet>", base64
// HMAC-SHA1 of the file's (trimmed) contents.
func sfuCredential(t *testing.T, stateDir string) (user, pass string) {
	t.Helper()
	secret, err := os.ReadFile(keystore.SFUSecretPath(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	user = strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + ":PA_Zx7kQm3RtV9w"
	mac := hmac.New(sha1.New, bytes.TrimSpace(secret))
	mac.Write([]byte(user))
	return user, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// TestNodeReloadSFUPeers: SIGHUP re-reads matrixrtc.livekit.turn.peers
// into the relay's SFU allow-list: an SFU credential reaches the newly
// listed port, and the live allocation no longer reaches the unlisted one.
func TestNodeReloadSFUPeers(t *testing.T) {
	var peers [2]net.PacketConn
	for i := range peers {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		peers[i] = pc
	}
	stateDir := filepath.Join(t.TempDir(), "state")
	cfg := nodetest.Config(stateDir, testSecret)
	cfg.TURN.AllowLoopbackPeers = false // only the SFU allow-list opens these ports
	cfg.MatrixRTC.LiveKit.TURN.Enabled = true
	cfg.MatrixRTC.LiveKit.TURN.Peers = []string{peers[0].LocalAddr().String()}
	reload := make(chan struct{}, 1)
	next := cfg
	next.MatrixRTC.LiveKit.TURN.Peers = []string{peers[1].LocalAddr().String()}
	log := &syncBuffer{}
	n := nodetest.Start(t, cfg, node.Options{
		Logger: zerolog.New(log), Reload: reload,
		LoadConfig: func() (config.Config, error) { return next, nil },
	})
	udp := first(n.Addrs.TURNUDP)
	user, pass := sfuCredential(t, stateDir)
	_, relay := turnClient(t, udp, user, pass)
	echo(t, relay, peers[0])

	reload <- struct{}{}
	poll(t, 10*time.Second, "SIGHUP handled", func() bool { return strings.Contains(log.String(), "keyring reloaded") })
	_, relay2 := turnClient(t, udp, user, pass)
	// The live allocation's datagram to the port no longer listed goes
	// first; the new one's to the listed port after it.
	if _, err := relay.WriteTo([]byte("to-unlisted"), peers[0].LocalAddr()); err != nil {
		t.Logf("WriteTo the unlisted port: %v", err)
	}
	echo(t, relay2, peers[1])
	_ = peers[0].SetReadDeadline(time.Now())
	if n, _, err := peers[0].ReadFrom(make([]byte, 64)); err == nil {
		t.Errorf("a port dropped from matrixrtc.livekit.turn.peers still got %d bytes", n)
	}
}

// adminKeyring is GET /admin/keyring with an admin token.
func adminKeyring(t *testing.T, httpAddr, token string) httpapi.KeyringInfo {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+"/admin/keyring", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var k httpapi.KeyringInfo
	if err := json.Unmarshal(body, &k); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /admin/keyring: %d %v", resp.StatusCode, err)
	}
	t.Logf("GET /admin/keyring: %s", bytes.TrimSpace(body))
	return k
}
