package gateway_test

import (
	"context"
	"errors"
	"testing"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
)

// TestGatewayRefusesUnencrypted: with the room known to be end-to-end
// encrypted, the Identity transformer is refused before anything joins.
func TestGatewayRefusesUnencrypted(t *testing.T) {
	gw, err := gateway.New(gateway.Config{URL: "ws://127.0.0.1:1", Token: "x", Transformer: gateway.Identity{}, E2EE: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Answer(context.Background(), "v=0\r\n"); !errors.Is(err, gateway.ErrUnencrypted) {
		t.Fatalf("Answer = %v, want ErrUnencrypted", err)
	}
	if !errors.Is(gw.Err(), gateway.ErrUnencrypted) {
		t.Fatalf("Err = %v", gw.Err())
	}
	_ = gw.Close()
}
