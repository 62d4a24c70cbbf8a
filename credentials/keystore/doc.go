// Package keystore owns the TURN credentials keyring on disk: the secrets
// icebox generates into <state_dir>/secrets, the rotation record
// (secrets/keyring.json) of a managed keyring, and the state record
// (<state_dir>/state.json) that is the evidence of what a state directory
// held. It builds the pure credentials.Keyring from the configuration and
// these files, and its Manager rotates, retires and reloads the live one.
//
// The credentials package stays free of I/O; everything that touches a
// file for it lives here.
package keystore
