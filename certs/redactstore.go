package certs

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// redactStorage is the certmagic.Storage the inbound manager uses: it passes
// every call to the real storage and registers each private key it sees
// stored or loaded (ACME account keys, certificate keys) with a SecretSet,
// replacing what was registered under the same storage key. A deleted key's
// material is removed.
type redactStorage struct {
	certmagic.Storage

	mu  sync.Mutex
	reg registered
}

func newRedactStorage(s certmagic.Storage, secrets SecretSet) certmagic.Storage {
	if secrets == nil {
		return s
	}
	return &redactStorage{Storage: s, reg: registered{secrets: secrets}}
}

func (s *redactStorage) Store(ctx context.Context, key string, value []byte) error {
	if err := s.Storage.Store(ctx, key, value); err != nil {
		return err
	}
	s.note(key, value)
	return nil
}

func (s *redactStorage) Load(ctx context.Context, key string) ([]byte, error) {
	v, err := s.Storage.Load(ctx, key)
	if err == nil {
		s.note(key, v)
	}
	return v, err
}

func (s *redactStorage) Delete(ctx context.Context, key string) error {
	err := s.Storage.Delete(ctx, key)
	if err == nil {
		s.mu.Lock()
		s.reg.drop(key)
		s.mu.Unlock()
	}
	return err
}

// TryLock passes through when the storage supports it (certmagic looks for
// it by type assertion).
func (s *redactStorage) TryLock(ctx context.Context, name string) (bool, error) {
	tl, ok := s.Storage.(certmagic.TryLocker)
	if !ok {
		return false, fmt.Errorf("%T does not implement TryLock", s.Storage)
	}
	return tl.TryLock(ctx, name)
}

// RenewLockLease passes through when the storage supports it.
func (s *redactStorage) RenewLockLease(ctx context.Context, name string, d time.Duration) error {
	if r, ok := s.Storage.(certmagic.LockLeaseRenewer); ok {
		return r.RenewLockLease(ctx, name, d)
	}
	return nil
}

func (s *redactStorage) String() string { return fmt.Sprint(s.Storage) }

// note registers value when it is a private key.
func (s *redactStorage) note(key string, value []byte) {
	vals := keySecrets(value)
	if vals == nil {
		return
	}
	s.mu.Lock()
	s.reg.set(key, vals)
	s.mu.Unlock()
}

var (
	_ certmagic.TryLocker        = (*redactStorage)(nil)
	_ certmagic.LockLeaseRenewer = (*redactStorage)(nil)
)
