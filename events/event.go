package events

import "time"

// Kinds of events, the SSE `event:` names. They are part of the external
// contract (docs/SPEC.md).
const (
	// CredentialRotated: a credential holds a new value (a new version), the
	// first one fetched included.
	CredentialRotated = "credential.rotated"
	// CredentialFailed: a refresh failed; the current value, if any, is
	// still served.
	CredentialFailed = "credential.failed"
	// CredentialExpired: a credential's value passed its expires_at (state
	// stale while max_stale still allows it, then expired when that ends).
	CredentialExpired = "credential.expired"
	// CredentialRevoked: a value was revoked at its issuer: a superseded
	// one once no request held it (or after its grace), or at exit.
	CredentialRevoked = "credential.revoked"
	// CredentialRevokeFailed: revoking a value at its issuer failed.
	CredentialRevokeFailed = "credential.revoke_failed"
	// CertificateIssued: the first certificate this process serves under a
	// name (obtained, issued or loaded from storage).
	CertificateIssued = "certificate.issued"
	// CertificateRenewed: a newer certificate replaced the one served.
	CertificateRenewed = "certificate.renewed"
	// ReloadApplied: a reload (SIGHUP) switched to the new configuration.
	ReloadApplied = "reload.applied"
	// ReloadRefused: a reload was refused; the running configuration keeps
	// serving.
	ReloadRefused = "reload.refused"
	// CallerRefused: requests were refused before any credential was used
	// (sidekey_callers_refused_total); at most one event a second per
	// reason, with the count since the previous one.
	CallerRefused = "caller.refused"
)

// Event is one thing that happened. Only the fields of its kind are set;
// the others are left out of its JSON. It never holds a secret value.
type Event struct {
	// ID numbers the events of one process from 1, in publication order.
	ID   uint64    `json:"id"`
	Kind string    `json:"kind"`
	Time time.Time `json:"time"`

	// Credential events.
	Credential     string    `json:"credential,omitempty"`
	Source         string    `json:"source,omitempty"`
	Version        uint64    `json:"version,omitempty"`
	Fingerprint    string    `json:"fingerprint,omitempty"`
	OldVersion     uint64    `json:"old_version,omitempty"`
	OldFingerprint string    `json:"old_fingerprint,omitempty"`
	State          string    `json:"state,omitempty"`
	IssuedAt       time.Time `json:"issued_at,omitzero"`
	ExpiresAt      time.Time `json:"expires_at,omitzero"`
	NextRefresh    time.Time `json:"next_refresh,omitzero"`
	Rotations      uint64    `json:"rotations,omitempty"`
	// Drained: a revoked value was held by no request any more; InFlight
	// is how many still held it when its grace ran out instead.
	Drained  bool  `json:"drained,omitempty"`
	InFlight int64 `json:"in_flight,omitempty"`

	// Certificate events.
	Certificate     string    `json:"certificate,omitempty"`
	CertificateKind string    `json:"certificate_kind,omitempty"`
	Subjects        []string  `json:"subjects,omitempty"`
	Issuer          string    `json:"issuer,omitempty"`
	Serial          string    `json:"serial,omitempty"`
	OldSerial       string    `json:"old_serial,omitempty"`
	NotBefore       time.Time `json:"not_before,omitzero"`
	NotAfter        time.Time `json:"not_after,omitzero"`

	// Reload events.
	File     string   `json:"file,omitempty"`
	Routes   int      `json:"routes,omitempty"`
	Added    []string `json:"added,omitempty"`
	Removed  []string `json:"removed,omitempty"`
	Problems []string `json:"problems,omitempty"`

	// Reason is a caller refusal's reason (the metric's label), or why a
	// value was revoked (superseded, exit). Count is how many requests were
	// refused for that reason since its previous event.
	Reason string `json:"reason,omitempty"`
	Count  uint64 `json:"count,omitempty"`

	// Error says why a refresh or revocation failed (redacted like every
	// admin answer).
	Error string `json:"error,omitempty"`
}
