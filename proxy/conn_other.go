//go:build !unix

package proxy

import "net"

// peerClosed cannot peek without blocking here; a connection the upstream
// closed while idle fails at its next request, as before.
func peerClosed(net.Conn) bool { return false }
