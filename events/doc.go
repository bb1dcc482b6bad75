// Package events is sidekey's stream of operational events: each credential
// rotation, refresh failure, expiry and revocation, each certificate issued
// or renewed, each reload applied or refused, and caller refusals. A Broker
// numbers the events, keeps the last ones in a ring for replay and hands
// them to live subscribers (the admin API's /v1/events, the status page,
// `sidekey watch`).
//
// An Event carries names, versions, fingerprints, serials and times, never
// a secret value: the type has no field that could hold one.
//
// Publish never waits for a subscriber. A subscriber whose backlog is full
// is dropped (its channel closed), so that a slow or stuck client costs the
// publisher nothing; it reconnects and replays what it missed from the
// ring. The package imports nothing of sidekey's.
package events
