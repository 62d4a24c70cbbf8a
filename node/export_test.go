package node

import "github.com/icebox-voip/icebox/signaling/matrix"

// MatrixBridge is the node's Matrix bridge (nil when Matrix is off), for
// tests that act as icebox's own device (JoinRTC).
func (n *Node) MatrixBridge() *matrix.Bridge { return n.bridge }
