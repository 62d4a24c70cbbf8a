package matrix

// OwnSigningKey returns the device's ed25519 key while encryption is up.
func OwnSigningKey(b *Bridge) string {
	_, _, key := b.EncryptionIdentity()
	return key
}
