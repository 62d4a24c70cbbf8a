package node

import (
	"errors"
	"fmt"

	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/signaling/httpapi"
)

// keyringAdmin serves /admin/keyring from the keystore, converting its
// descriptions to the API's.
type keyringAdmin struct{ keys *keystore.Manager }

var _ httpapi.KeyringAdmin = keyringAdmin{}

func (a keyringAdmin) Rotate(compat bool) (httpapi.KeyringInfo, error) {
	info, err := a.keys.Rotate(compat)
	if errors.Is(err, keystore.ErrNotManaged) {
		return httpapi.KeyringInfo{}, fmt.Errorf("%w: %w", httpapi.ErrKeyringNotManaged, err)
	}
	if err != nil {
		return httpapi.KeyringInfo{}, err
	}
	return apiKeyringInfo(info), nil
}

func (a keyringAdmin) Info() httpapi.KeyringInfo { return apiKeyringInfo(a.keys.Info()) }

func apiKeyringInfo(in keystore.Info) httpapi.KeyringInfo {
	out := httpapi.KeyringInfo{ActiveKID: in.ActiveKID}
	for _, k := range in.Keys {
		out.Keys = append(out.Keys, httpapi.KeyInfo{KID: k.KID, Compat: k.Compat, RetireAt: k.RetireAt})
	}
	return out
}
