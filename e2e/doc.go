// Package e2e drives the built sidekey binary end to end over loopback.
//
// TestMain builds ./cmd/sidekey from the repository root once, every test
// starts its own sidekey process against real upstream servers listening
// on 127.0.0.1, and after the run the suite scans every log line, captured
// response and written file for the secret values it generated. The
// package is a module of its own so that test-only dependencies never
// reach the shipped binary.
//
// Run it from this directory:
//
//	go test -race -count=1 ./...
//
// SIDEKEY_E2E_BIN=path runs it against an already built binary instead.
package e2e
