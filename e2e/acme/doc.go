// Package acme drives the built sidekey binary's inbound TLS listener
// against a real ACME CA: Pebble, Let's Encrypt's test CA, runs inside the
// test process and validates tls-alpn-01 for real against the proxy's own
// port on 127.0.0.1 (a test DNS server answers every name with 127.0.0.1).
//
// Every sidekey process runs with HOME, TMPDIR and its working directory
// set to empty directories, which must still be empty when it has exited:
// the ACME account, keys and certificates live in memory only.
//
// Run it from the e2e directory:
//
//	go test -race -count=1 ./acme/
//
// SIDEKEY_E2E_BIN=path runs it against an already built binary instead of
// building ../cmd/sidekey.
package acme
