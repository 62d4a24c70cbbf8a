package matrix

// OwnSigningKey returns the device's ed25519 key once EncryptionUp.
func OwnSigningKey(b *Bridge) string {
	if !b.crypto.ready() {
		return ""
	}
	return string(b.crypto.helper.Machine().OwnIdentity().SigningKey)
}
