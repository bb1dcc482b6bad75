package injector

// STUB: the exported surface of the holder. The implementation replaces this
// file; the signatures below are the contract the proxy codes against.

import (
	"context"
	"errors"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sidekey/sidekey/config"
)

// ErrUnavailable is returned by Acquire when the credential has no value, or
// its value is past expires_at + max_stale.
var ErrUnavailable = errors.New("credential unavailable")

// SecretSet receives every live secret value so that log output can be
// scrubbed of it. telemetry.Redactor implements it.
type SecretSet interface {
	Add(values ...string)
	Remove(values ...string)
}

// Clock is the holder's source of time; tests inject a fake.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer a Clock hands out.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// Holder holds the current value of one credential and keeps it fresh.
type Holder struct {
	Name          string
	SourceName    string // "file", "env", ... for status
	Source        Source
	Clock         Clock
	RefreshEvery  time.Duration
	RefreshBefore config.RefreshBefore
	MaxStale      time.Duration
	RevokeOld     bool
	RevokeGrace   time.Duration
	Key           []byte // fingerprint HMAC key
	Log           logrus.FieldLogger
	Secrets       SecretSet
}

// Version is one immutable value of a credential, reference-counted by the
// requests that hold it.
type Version struct{}

func (v *Version) Secret() *Secret     { return nil }
func (v *Version) Number() uint64      { return 0 }
func (v *Version) Fingerprint() string { return "" }
func (v *Version) Release()            {}

func (h *Holder) Acquire() (*Version, error)                         { return nil, ErrUnavailable }
func (h *Holder) Run(ctx context.Context) error                      { <-ctx.Done(); return nil }
func (h *Holder) Refresh(ctx context.Context) error                  { return nil }
func (h *Holder) RefreshAfter(ctx context.Context, v *Version) error { return nil }
func (h *Holder) Status() Status                                     { return Status{} }

// Status is a holder's state as the admin API shows it. It holds no secret.
type Status struct {
	Name        string    `json:"name"`
	Source      string    `json:"source"`
	Version     uint64    `json:"version"`
	Fingerprint string    `json:"fingerprint"`
	State       string    `json:"state"`
	IssuedAt    time.Time `json:"issued_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	NextRefresh time.Time `json:"next_refresh"`
	LastError   string    `json:"last_error"`
	Rotations   uint64    `json:"rotations"`
}

// Set is the holders of a configuration, by name.
type Set struct{}

func NewSet(creds []config.Credential, opts SetOptions) (*Set, error) { return &Set{}, nil }
func (s *Set) Holder(name string) *Holder                             { return nil }
func (s *Set) Run(ctx context.Context) error                          { <-ctx.Done(); return nil }
func (s *Set) Statuses() []Status                                     { return nil }

// SetOptions are shared by every holder of a Set.
type SetOptions struct {
	Clock   Clock
	Log     logrus.FieldLogger
	Secrets SecretSet
	// NewSource builds a credential's source; nil means NewSource.
	NewSource func(config.Credential) (Source, error)
}
