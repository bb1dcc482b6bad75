package certs

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// MemoryStorage is a certmagic.Storage held in process memory: the ACME
// account, certificates and keys live as long as the process and are never
// written to disk. Replicas do not share it; each obtains its own
// certificates.
//
// Its zero value is ready to use. All methods are safe for concurrent use.
// Locks are in-process: Lock blocks until the holder calls Unlock or ctx
// ends, and a lock never goes stale (a holder that stops also stops the
// process that would wait for it).
type MemoryStorage struct {
	mu    sync.RWMutex
	items map[string]memItem

	lockMu sync.Mutex
	locks  map[string]chan struct{} // closed on Unlock
}

type memItem struct {
	value    []byte
	modified time.Time
}

var (
	_ certmagic.Storage   = (*MemoryStorage)(nil)
	_ certmagic.TryLocker = (*MemoryStorage)(nil)
)

// Store puts a copy of value at key.
func (s *MemoryStorage) Store(ctx context.Context, key string, value []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key, err := cleanKey(key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.items == nil {
		s.items = map[string]memItem{}
	}
	s.items[key] = memItem{value: slices.Clone(value), modified: time.Now()}
	return nil
}

// Load returns a copy of the value at key, or fs.ErrNotExist.
func (s *MemoryStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, ok := s.items[path.Clean(key)]
	if !ok {
		return nil, fmt.Errorf("loading %s: %w", key, fs.ErrNotExist)
	}
	return slices.Clone(it.value), nil
}

// Delete removes key and, when key is a directory, everything below it. A
// key that does not exist is not an error.
func (s *MemoryStorage) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key = path.Clean(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.items {
		if k == key || isBelow(k, key) {
			delete(s.items, k)
		}
	}
	return nil
}

// Exists reports whether key is a file or a directory.
func (s *MemoryStorage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// List returns the keys directly below prefix (files and directories), or
// every key below it, directories included, when recursive is true. A
// prefix with nothing below it gives fs.ErrNotExist.
func (s *MemoryStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	prefix = path.Clean(prefix)
	s.mu.RLock()
	defer s.mu.RUnlock()
	seen := map[string]bool{}
	for k := range s.items {
		if !isBelow(k, prefix) {
			continue
		}
		rel := relTo(k, prefix)
		parts := strings.Split(rel, "/")
		if !recursive {
			parts = parts[:1]
		}
		for i := range parts {
			seen[joinKey(prefix, strings.Join(parts[:i+1], "/"))] = true
		}
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("listing %s: %w", prefix, fs.ErrNotExist)
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

// Stat describes key: a file with its size and modification time, or a
// directory when keys exist below it.
func (s *MemoryStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if err := ctx.Err(); err != nil {
		return certmagic.KeyInfo{}, err
	}
	key = path.Clean(key)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if it, ok := s.items[key]; ok {
		return certmagic.KeyInfo{Key: key, Modified: it.modified, Size: int64(len(it.value)), IsTerminal: true}, nil
	}
	for k := range s.items {
		if isBelow(k, key) {
			return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
		}
	}
	return certmagic.KeyInfo{}, fmt.Errorf("stat %s: %w", key, fs.ErrNotExist)
}

// Lock takes the named lock, waiting while another caller holds it, until
// ctx ends.
func (s *MemoryStorage) Lock(ctx context.Context, name string) error {
	for {
		ok, wait := s.tryLock(name)
		if ok {
			return nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("waiting for lock %s: %w", name, ctx.Err())
		}
	}
}

// TryLock takes the named lock if it is free and reports whether it did.
func (s *MemoryStorage) TryLock(ctx context.Context, name string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	ok, _ := s.tryLock(name)
	return ok, nil
}

// Unlock releases the named lock, waking its waiters.
func (s *MemoryStorage) Unlock(_ context.Context, name string) error {
	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	ch, ok := s.locks[name]
	if !ok {
		return fmt.Errorf("unlocking %s: %w", name, ErrNotLocked)
	}
	delete(s.locks, name)
	close(ch)
	return nil
}

// tryLock takes the lock, or returns a channel closed when it is released.
func (s *MemoryStorage) tryLock(name string) (bool, <-chan struct{}) {
	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	if ch, held := s.locks[name]; held {
		return false, ch
	}
	if s.locks == nil {
		s.locks = map[string]chan struct{}{}
	}
	s.locks[name] = make(chan struct{})
	return true, nil
}

func (s *MemoryStorage) String() string { return "memory" }

// cleanKey checks a key to be stored: relative, with no empty, "." or ".."
// components once cleaned.
func cleanKey(key string) (string, error) {
	k := path.Clean(key)
	if k == "." || k == "" || strings.HasPrefix(k, "/") || k == ".." || strings.HasPrefix(k, "../") {
		return "", fmt.Errorf("storage key %q is not a relative path", key)
	}
	return k, nil
}

// isBelow reports whether key lies strictly under dir, component-wise ("a"
// is above "a/b" but not "ab/c"); every key lies below the root ".".
func isBelow(key, dir string) bool {
	if dir == "." || dir == "" {
		return key != "." && key != ""
	}
	return strings.HasPrefix(key, dir+"/")
}

// relTo returns key relative to dir, which it lies below.
func relTo(key, dir string) string {
	if dir == "." || dir == "" {
		return key
	}
	return key[len(dir)+1:]
}

// joinKey joins a directory and a relative key.
func joinKey(dir, rel string) string {
	if dir == "." || dir == "" {
		return rel
	}
	return dir + "/" + rel
}
