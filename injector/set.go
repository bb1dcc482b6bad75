package injector

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
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
	configs map[string]config.Credential
	key     []byte
	secrets SecretSet // the counting layer shared by every holder
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
	// OnRevoke is every holder's OnRevoke.
	OnRevoke func(Revocation)
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

	s := &Set{holders: make(map[string]*Holder, len(creds)), configs: map[string]config.Credential{},
		key: key, secrets: secrets}
	var errs []error
	for _, c := range creds {
		if _, dup := s.holders[c.Name]; dup {
			errs = append(errs, fmt.Errorf("credential %q is defined twice", c.Name))
			continue
		}
		h, err := s.newHolder(c, opts, newSource)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.holders[c.Name] = h
		s.configs[c.Name] = c
		s.names = append(s.names, c.Name)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.Sort(s.names)
	return s, nil
}

func (s *Set) newHolder(c config.Credential, opts SetOptions, newSource func(config.Credential) (Source, error)) (*Holder, error) {
	src, err := newSource(c)
	if err != nil {
		return nil, err
	}
	return &Holder{
		Name:          c.Name,
		SourceName:    c.Source,
		Source:        src,
		Clock:         opts.Clock,
		RefreshEvery:  c.Refresh,
		RefreshBefore: c.RefreshBefore,
		MaxStale:      c.MaxStale,
		RevokeOld:     c.RevokeOld,
		Key:           s.key,
		Log:           opts.Log,
		Secrets:       s.secrets,
		OnRotate:      opts.OnRotate,
		OnRevoke:      opts.OnRevoke,
	}, nil
}

// Reconfigure builds the Set for a new configuration, for a reload. A
// credential whose configuration is unchanged keeps its Holder — and so its
// value, version and schedule: nothing is fetched again. New and changed
// credentials get new holders (added), which the caller must Run; holders of
// removed and changed credentials are returned (removed) for the caller to
// stop and, once drained, revoke. s itself is not modified. On error nothing
// is returned and s keeps serving.
func (s *Set) Reconfigure(creds []config.Credential, opts SetOptions) (next *Set, added, removed []*Holder, err error) {
	newSource := opts.NewSource
	if newSource == nil {
		newSource = NewSource
	}
	next = &Set{holders: map[string]*Holder{}, configs: map[string]config.Credential{}, key: s.key, secrets: s.secrets}
	var errs []error
	for _, c := range creds {
		if _, dup := next.holders[c.Name]; dup {
			errs = append(errs, fmt.Errorf("credential %q is defined twice", c.Name))
			continue
		}
		h := s.holders[c.Name]
		if h == nil || !sameCredential(s.configs[c.Name], c) {
			if h, err = next.newHolder(c, opts, newSource); err != nil {
				errs = append(errs, err)
				continue
			}
			added = append(added, h)
		}
		next.holders[c.Name], next.configs[c.Name] = h, c
		next.names = append(next.names, c.Name)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, nil, err
	}
	for _, name := range s.names {
		if next.holders[name] != s.holders[name] {
			removed = append(removed, s.holders[name])
		}
	}
	slices.Sort(next.names)
	return next, added, removed, nil
}

// sameCredential compares two configurations of a credential, ignoring
// where in the file they stand.
func sameCredential(a, b config.Credential) bool {
	a.Line, b.Line = 0, 0
	return reflect.DeepEqual(a, b)
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
