package injector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// leaseValueFields are the fields tried, in order, for a lease's Value.
var leaseValueFields = []string{"token", "password", "secret_key", "certificate"}

var (
	errLeaseNotRenewable = errors.New("vault lease is not renewable")
	errLeaseAtMaxTTL     = errors.New("vault lease reached its max TTL")
)

// VaultLease is the Handle of a Secret from a VaultLeaseSource.
type VaultLease struct {
	// ID is the lease ID; empty for an answer without a lease.
	ID string
	// Renewable is Vault's renewable flag of the lease.
	Renewable bool
	// Duration is the lease's TTL when it was issued, asked for again at
	// each renewal.
	Duration time.Duration
	// AtMaxTTL reports that the last renewal granted less than Duration:
	// the lease cannot be extended any further.
	AtMaxTTL bool
}

// VaultLeaseSource obtains a credential from any lease-bearing Vault path:
// it reads the path (database/creds/ROLE, aws/creds/ROLE) or, when Data is
// not nil, writes Data to it (pki/issue/ROLE). Revoke revokes a lease at
// sys/leases/revoke, which the token's policy must allow (update on
// sys/leases/revoke). The source does not renew; RenewingVaultLeaseSource
// does.
//
// Leases are tied to the Vault token that created them: when that token
// expires or is revoked, so are they. Give the auth token a max TTL longer
// than the leases it creates, or Vault revokes them before they end.
//
// Configure it through the exported fields before the first Fetch and do
// not change them afterwards. Fetch and Revoke are safe for concurrent use.
type VaultLeaseSource struct {
	Client *VaultClient
	Path   string
	// Data, when not nil, is written to Path instead of reading it.
	Data map[string]any
	// Clock stamps IssuedAt and ExpiresAt; nil is SystemClock. Use the
	// holder's clock.
	Clock Clock
}

// Fetch obtains a new lease. The Secret's Fields are every string field
// of the answer; its Value is the first present of token, password,
// secret_key and certificate; IssuedAt is now, ExpiresAt now plus the lease
// duration (for an answer without a lease, its "expiration" field when it
// has one, else never); the Handle is a *VaultLease.
func (s *VaultLeaseSource) Fetch(ctx context.Context) (*Secret, error) {
	if s.Client == nil {
		return nil, fmt.Errorf("vault-lease %s: %w", s.Path, ErrNoVault)
	}
	path := strings.Trim(s.Path, "/")
	var sec *api.Secret
	var err error
	if s.Data != nil {
		sec, err = s.Client.Write(ctx, path, s.Data)
	} else {
		sec, err = s.Client.Read(ctx, path)
	}
	if err != nil {
		return nil, fmt.Errorf("obtaining a lease from %s: %w", path, err)
	}
	out, err := leaseSecret(sec, s.now())
	if err != nil {
		return nil, fmt.Errorf("obtaining a lease from %s: %w", path, err)
	}
	return out, nil
}

func (s *VaultLeaseSource) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock.Now()
}

// Revoke revokes the lease of sec; a Secret without a lease is left alone.
// Vault answers success for a lease that has already ended.
func (s *VaultLeaseSource) Revoke(ctx context.Context, sec *Secret) error {
	l, ok := sec.Handle.(*VaultLease)
	if !ok || l.ID == "" {
		return nil
	}
	err := s.Client.Do(ctx, func(cl *api.Client) error {
		return cl.Sys().RevokeWithContext(ctx, l.ID)
	})
	if err != nil {
		return fmt.Errorf("revoking a lease of %s: %w", strings.Trim(s.Path, "/"), err)
	}
	return nil
}

// leaseSecret turns a Vault answer into a Secret obtained at now.
func leaseSecret(sec *api.Secret, now time.Time) (*Secret, error) {
	if sec == nil || len(sec.Data) == 0 {
		return nil, errors.New("no data in the answer")
	}
	fields := stringFields(sec.Data)
	value, err := leaseValue(fields)
	if err != nil {
		return nil, err
	}
	d := time.Duration(sec.LeaseDuration) * time.Second
	out := &Secret{
		Value:    value,
		Fields:   fields,
		IssuedAt: now,
		Handle:   &VaultLease{ID: sec.LeaseID, Renewable: sec.Renewable, Duration: d},
	}
	switch exp := seconds(sec.Data["expiration"]); {
	case d > 0:
		out.ExpiresAt = now.Add(d)
	case sec.LeaseID == "" && exp > 0:
		out.ExpiresAt = time.Unix(int64(exp/time.Second), 0)
	}
	return out, nil
}

// leaseValue picks the Value among the string fields: the first present of
// leaseValueFields. The error lists the field names, never a value.
func leaseValue(fields map[string]string) (string, error) {
	for _, name := range leaseValueFields {
		if v, ok := fields[name]; ok && v != "" {
			return v, nil
		}
	}
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	slices.Sort(names)
	return "", fmt.Errorf("the answer has none of the fields %s (it has %s)",
		strings.Join(leaseValueFields, ", "), strings.Join(names, ", "))
}

// RenewingVaultLeaseSource is a VaultLeaseSource that also renews its
// leases (the credential's renew: true): the holder renews a lease ahead
// of its expiry while Vault allows, and obtains a new one when it does not.
type RenewingVaultLeaseSource struct {
	*VaultLeaseSource
}

var (
	_ Revoker = (*VaultLeaseSource)(nil)
	_ Renewer = (*RenewingVaultLeaseSource)(nil)
)

// Renew extends the lease of sec by its original duration at
// sys/leases/renew and returns the same value with IssuedAt now and the new
// ExpiresAt. It fails without calling Vault for a lease that is not
// renewable or whose last renewal was capped by its max TTL, and the holder
// then obtains a new lease. A capped renewal (less than asked for) is
// marked AtMaxTTL so that the next refresh replaces the lease ahead of its
// final expiry; one that grants less than a third of the duration, already
// inside the refresh window, fails so that the lease is replaced at once.
func (s *RenewingVaultLeaseSource) Renew(ctx context.Context, sec *Secret) (*Secret, error) {
	l, ok := sec.Handle.(*VaultLease)
	switch {
	case !ok || l.ID == "" || !l.Renewable:
		return nil, errLeaseNotRenewable
	case l.AtMaxTTL:
		return nil, errLeaseAtMaxTTL
	}
	var r *api.Secret
	err := s.Client.Do(ctx, func(cl *api.Client) (err error) {
		r, err = cl.Sys().RenewWithContext(ctx, l.ID, int(l.Duration/time.Second))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("renewing a lease of %s: %w", strings.Trim(s.Path, "/"), err)
	}
	return renewedLease(sec, l, r, s.now())
}

// renewedLease is sec renewed at now by Vault's answer r.
func renewedLease(sec *Secret, l *VaultLease, r *api.Secret, now time.Time) (*Secret, error) {
	if r == nil {
		return nil, errors.New("vault lease renewal: empty answer")
	}
	d := time.Duration(r.LeaseDuration) * time.Second
	if d <= 0 || d < l.Duration/3 {
		return nil, errLeaseAtMaxTTL
	}
	id := r.LeaseID
	if id == "" {
		id = l.ID
	}
	out := *sec
	out.IssuedAt = now
	out.ExpiresAt = now.Add(d)
	out.Handle = &VaultLease{ID: id, Renewable: r.Renewable, Duration: l.Duration, AtMaxTTL: d < l.Duration}
	return &out, nil
}
