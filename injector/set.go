package injector

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/sidekey/sidekey/config"
)

// Set is the holders of a configuration, by name. It is immutable after
// NewSet; its methods are safe for concurrent use.
type Set struct {
	names   []string // sorted
	holders map[string]*Holder
}

// SetOptions are shared by every holder of a Set.
type SetOptions struct {
	Clock   Clock
	Log     logrus.FieldLogger
	Secrets SecretSet
	// NewSource builds a credential's source; nil means NewSource. Its
	// errors should name the credential.
	NewSource func(config.Credential) (Source, error)
	// OnRotate is every holder's OnRotate.
	OnRotate func(name, result string)
}

// NewSet builds one Holder per credential, all sharing one fingerprint key
// drawn at random here, so fingerprints tell versions apart within this
// process and mean nothing outside it. It does not fetch: a credential that
// cannot be fetched yet is reported by its holder's status, not here. It
// fails, naming every problem, when a source cannot be built or a name is
// repeated.
func NewSet(creds []config.Credential, opts SetOptions) (*Set, error) {
	newSource := opts.NewSource
	if newSource == nil {
		newSource = NewSource
	}
	key := make([]byte, 32)
	rand.Read(key) // never fails
	// One counting layer for all holders, so a value two credentials share
	// stays registered while either has it.
	secrets := newCountedSet(opts.Secrets)

	s := &Set{holders: make(map[string]*Holder, len(creds))}
	var errs []error
	for _, c := range creds {
		if _, dup := s.holders[c.Name]; dup {
			errs = append(errs, fmt.Errorf("credential %q is defined twice", c.Name))
			continue
		}
		src, err := newSource(c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.holders[c.Name] = &Holder{
			Name:          c.Name,
			SourceName:    c.Source,
			Source:        src,
			Clock:         opts.Clock,
			RefreshEvery:  c.Refresh,
			RefreshBefore: c.RefreshBefore,
			MaxStale:      c.MaxStale,
			RevokeOld:     c.RevokeOld,
			Key:           key,
			Log:           opts.Log,
			Secrets:       secrets,
			OnRotate:      opts.OnRotate,
		}
		s.names = append(s.names, c.Name)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.Sort(s.names)
	return s, nil
}

// Holder returns the named holder, or nil.
func (s *Set) Holder(name string) *Holder { return s.holders[name] }

// Names returns the credential names, sorted.
func (s *Set) Names() []string { return slices.Clone(s.names) }

// Run runs every holder until ctx ends, then returns nil once they have
// all stopped. A holder failing to fetch does not stop the others.
func (s *Set) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, name := range s.names {
		h := s.holders[name]
		g.Go(func() error { return h.Run(ctx) })
	}
	return g.Wait()
}

// Statuses reports every holder, sorted by name.
func (s *Set) Statuses() []Status {
	out := make([]Status, len(s.names))
	for i, name := range s.names {
		out[i] = s.holders[name].Status()
	}
	return out
}

// Revoke revokes, concurrently, everything the holders still track (see
// Holder.Revoke) and closes them. Call it on a clean exit after Run has
// returned and requests have drained, within the shutdown deadline in ctx.
// It returns every failure.
func (s *Set) Revoke(ctx context.Context) error {
	errs := make([]error, len(s.names))
	var wg sync.WaitGroup
	for i, name := range s.names {
		h := s.holders[name]
		wg.Go(func() { errs[i] = h.Revoke(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
