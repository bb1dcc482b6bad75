package certs

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	mathrand "math/rand/v2"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	vaultapi "github.com/hashicorp/vault/api"
)

const (
	// defaultLockTTL is how long a lock entry stays valid unless its holder
	// refreshes it: the longest a crashed holder keeps the others waiting.
	defaultLockTTL = 30 * time.Second
	// lockPollMin and lockPollMax bound the wait between attempts to take
	// a lock another replica holds.
	lockPollMin = 250 * time.Millisecond
	lockPollMax = 2 * time.Second
	// locksDir is where lock entries live below the storage prefix; List
	// leaves it out.
	locksDir = ".locks"
)

// VaultStorage is a certmagic.Storage kept in a Vault KV version 2 engine,
// so that replicas share one ACME account and one certificate per name.
//
// A storage key k lives at MOUNT/data/PREFIX/k as the field "value"
// (base64); Delete removes a key's metadata and every version. Locks are
// entries at MOUNT/data/PREFIX/.locks/NAME written with check-and-set
// (options.cas): a lock is taken by creating its entry (cas 0) or by
// replacing one that is released or expired (cas = its version). The holder
// rewrites the entry every third of the lock TTL (30 s) to push its expiry
// on; a holder that crashes stops doing so, and its lock is taken over once
// the TTL has passed. Expiry times are the holder's wall clock, so replicas'
// clocks must agree to well within the TTL.
//
// The Vault policy needs create, read, update, delete and list on
// MOUNT/data/PREFIX/* and MOUNT/metadata/PREFIX/*. A mount with cas_required
// is not supported. All methods are safe for concurrent use.
type VaultStorage struct {
	vault   Vault
	mount   string
	prefix  string // below the mount, no surrounding slashes; may be ""
	lockTTL time.Duration
	pollMin time.Duration // first wait between attempts on a held lock
	now     func() time.Time

	mu   sync.Mutex
	held map[string]*heldLock
}

// heldLock is a lock this storage holds, kept alive by a goroutine.
type heldLock struct {
	token string
	stop  chan struct{}
	done  chan struct{}

	mu      sync.Mutex
	version int64     // the entry's KV version after our last write
	until   time.Time // a lease asked for by RenewLockLease
}

// lockEntry is the value of a lock entry.
type lockEntry struct {
	Owner    string
	Expires  time.Time
	Released bool
}

var (
	_ certmagic.Storage          = (*VaultStorage)(nil)
	_ certmagic.TryLocker        = (*VaultStorage)(nil)
	_ certmagic.LockLeaseRenewer = (*VaultStorage)(nil)
)

// NewVaultStorage returns the storage at a KV v2 path written as in the
// configuration's "vault:PATH" (MOUNT/data/PREFIX, or MOUNT/PREFIX for a
// mount of one segment). It does not contact Vault.
func NewVaultStorage(v Vault, kvPath string) (*VaultStorage, error) {
	if v == nil {
		return nil, fmt.Errorf("vault storage %s: %w", kvPath, ErrNoVault)
	}
	mount, prefix, err := kvPaths(kvPath)
	if err != nil {
		return nil, err
	}
	return &VaultStorage{vault: v, mount: mount, prefix: prefix, lockTTL: defaultLockTTL,
		pollMin: lockPollMin, now: time.Now, held: map[string]*heldLock{}}, nil
}

func (s *VaultStorage) String() string { return "vault:" + s.mount + "/data/" + s.prefix }

func (s *VaultStorage) rel(key string) string {
	key = path.Clean(key)
	if key == "." {
		key = ""
	}
	switch {
	case s.prefix == "":
		return key
	case key == "":
		return s.prefix
	}
	return s.prefix + "/" + key
}

func (s *VaultStorage) dataPath(key string) string { return s.mount + "/data/" + s.rel(key) }
func (s *VaultStorage) metaPath(key string) string { return s.mount + "/metadata/" + s.rel(key) }

// kvEntry is one read of a KV v2 data path.
type kvEntry struct {
	data     map[string]any // nil: absent, or the current version is deleted
	version  int64          // current version; 0 when the key never existed
	modified time.Time
}

func (s *VaultStorage) read(ctx context.Context, key string) (kvEntry, error) {
	var sec *vaultapi.Secret
	err := s.vault.Do(ctx, func(c *vaultapi.Client) (err error) {
		sec, err = c.Logical().ReadWithContext(ctx, s.dataPath(key))
		return err
	})
	if err != nil && !vaultStatus(err, 404) {
		return kvEntry{}, err
	}
	var e kvEntry
	if sec == nil || sec.Data == nil {
		return e, nil
	}
	if meta, ok := sec.Data["metadata"].(map[string]any); ok {
		e.version, _ = number(meta["version"])
		if ts, ok := meta["created_time"].(string); ok {
			e.modified, _ = time.Parse(time.RFC3339Nano, ts)
		}
	}
	e.data, _ = sec.Data["data"].(map[string]any)
	return e, nil
}

// write stores data at key; cas >= 0 makes it a check-and-set write. It
// returns the new version.
func (s *VaultStorage) write(ctx context.Context, key string, data map[string]any, cas int64) (int64, error) {
	body := map[string]any{"data": data}
	if cas >= 0 {
		body["options"] = map[string]any{"cas": cas}
	}
	var sec *vaultapi.Secret
	err := s.vault.Do(ctx, func(c *vaultapi.Client) (err error) {
		sec, err = c.Logical().WriteWithContext(ctx, s.dataPath(key), body)
		return err
	})
	if err != nil {
		return 0, err
	}
	var v int64
	if sec != nil {
		v, _ = number(sec.Data["version"])
	}
	return v, nil
}

// Store puts value at key.
func (s *VaultStorage) Store(ctx context.Context, key string, value []byte) error {
	if _, err := cleanKey(key); err != nil {
		return err
	}
	_, err := s.write(ctx, key, map[string]any{"value": base64.StdEncoding.EncodeToString(value)}, -1)
	if err != nil {
		return fmt.Errorf("vault storage: storing %s: %w", key, err)
	}
	return nil
}

// Load returns the value at key, or fs.ErrNotExist.
func (s *VaultStorage) Load(ctx context.Context, key string) ([]byte, error) {
	e, err := s.read(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("vault storage: loading %s: %w", key, err)
	}
	return decodeValue(key, e)
}

func decodeValue(key string, e kvEntry) ([]byte, error) {
	v, ok := e.data["value"].(string)
	if !ok {
		return nil, fmt.Errorf("vault storage: loading %s: %w", key, fs.ErrNotExist)
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("vault storage: loading %s: the value is not base64", key)
	}
	return b, nil
}

// Delete removes key and everything below it; a missing key is not an
// error.
func (s *VaultStorage) Delete(ctx context.Context, key string) error {
	below, err := s.List(ctx, key, true)
	if err != nil && !isNotExist(err) {
		return fmt.Errorf("vault storage: deleting %s: %w", key, err)
	}
	for _, k := range append(below, key) {
		if err := s.deleteOne(ctx, k); err != nil {
			return fmt.Errorf("vault storage: deleting %s: %w", k, err)
		}
	}
	return nil
}

func (s *VaultStorage) deleteOne(ctx context.Context, key string) error {
	err := s.vault.Do(ctx, func(c *vaultapi.Client) error {
		_, err := c.Logical().DeleteWithContext(ctx, s.metaPath(key))
		return err
	})
	if vaultStatus(err, 404) {
		return nil
	}
	return err
}

// Exists reports whether key is a file or a directory.
func (s *VaultStorage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// Stat describes key: a file, with its size and the time its current
// version was written, or a directory.
func (s *VaultStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	e, err := s.read(ctx, key)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("vault storage: stat %s: %w", key, err)
	}
	if e.data != nil {
		b, err := decodeValue(key, e)
		if err != nil {
			return certmagic.KeyInfo{}, err
		}
		return certmagic.KeyInfo{Key: key, Modified: e.modified, Size: int64(len(b)), IsTerminal: true}, nil
	}
	keys, err := s.list(ctx, key)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("vault storage: stat %s: %w", key, err)
	}
	if len(keys) == 0 {
		return certmagic.KeyInfo{}, fmt.Errorf("vault storage: stat %s: %w", key, fs.ErrNotExist)
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

// List returns the keys directly below prefix, or every key below it
// (directories included) when recursive is true. Nothing below prefix is
// fs.ErrNotExist.
func (s *VaultStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	prefix = path.Clean(prefix)
	names, err := s.list(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("vault storage: listing %s: %w", prefix, err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("vault storage: listing %s: %w", prefix, fs.ErrNotExist)
	}
	var out []string
	for _, n := range names {
		dir := strings.HasSuffix(n, "/")
		k := joinKey(prefix, strings.TrimSuffix(n, "/"))
		out = append(out, k)
		if dir && recursive {
			sub, err := s.List(ctx, k, true)
			if err != nil && !isNotExist(err) {
				return nil, err
			}
			out = append(out, sub...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// list returns the names Vault lists below key ("name" or "dir/"), without
// the lock entries.
func (s *VaultStorage) list(ctx context.Context, key string) ([]string, error) {
	var sec *vaultapi.Secret
	err := s.vault.Do(ctx, func(c *vaultapi.Client) (err error) {
		sec, err = c.Logical().ListWithContext(ctx, s.metaPath(key))
		return err
	})
	if err != nil && !vaultStatus(err, 404) {
		return nil, err
	}
	if sec == nil {
		return nil, nil
	}
	raw, _ := sec.Data["keys"].([]any)
	root := path.Clean(key) == "."
	out := make([]string, 0, len(raw))
	for _, r := range raw {
		if n, ok := r.(string); ok && n != "" && !(root && strings.TrimSuffix(n, "/") == locksDir) {
			out = append(out, n)
		}
	}
	return out, nil
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// Lock takes the named lock, polling while another holder's entry is live,
// until ctx ends.
func (s *VaultStorage) Lock(ctx context.Context, name string) error {
	wait := s.pollMin
	for {
		ok, err := s.TryLock(ctx, name)
		if err != nil || ok {
			return err
		}
		t := time.NewTimer(time.Duration(float64(wait) * (0.75 + 0.5*mathrand.Float64())))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for lock %s: %w", name, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, lockPollMax)
	}
}

// TryLock takes the named lock when its entry is absent, released or
// expired, and reports whether it did. Losing a race for the entry is not
// an error.
func (s *VaultStorage) TryLock(ctx context.Context, name string) (bool, error) {
	key := lockKey(name)
	e, err := s.read(ctx, key)
	if err != nil {
		return false, fmt.Errorf("vault storage: reading lock %s: %w", name, err)
	}
	if cur, ok := parseLock(e.data); ok && !cur.Released && s.now().Before(cur.Expires) {
		return false, nil
	}
	h := &heldLock{token: newToken(), stop: make(chan struct{}), done: make(chan struct{})}
	v, err := s.write(ctx, key, lockData(h.token, s.now().Add(s.lockTTL), false), e.version)
	if isCASMismatch(err) {
		return false, nil // another replica took it first
	}
	if err != nil {
		return false, fmt.Errorf("vault storage: taking lock %s: %w", name, err)
	}
	h.version = v
	s.mu.Lock()
	s.held[name] = h
	s.mu.Unlock()
	go s.keepAlive(name, h)
	return true, nil
}

// RenewLockLease keeps a held lock at least until d from now.
func (s *VaultStorage) RenewLockLease(ctx context.Context, name string, d time.Duration) error {
	s.mu.Lock()
	h := s.held[name]
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("renewing lock %s: %w", name, ErrNotLocked)
	}
	h.mu.Lock()
	if until := s.now().Add(d); until.After(h.until) {
		h.until = until
	}
	h.mu.Unlock()
	return s.refresh(ctx, name, h)
}

// Unlock releases a lock this storage holds by marking its entry released
// (check-and-set against our last write). A lock that another replica took
// over after it expired counts as released.
func (s *VaultStorage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("unlocking %s: %w", name, ErrNotLocked)
	}
	close(h.stop)
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := s.write(ctx, lockKey(name), lockData(h.token, s.now(), true), h.version)
	if err != nil && !isCASMismatch(err) {
		return fmt.Errorf("vault storage: releasing lock %s: %w", name, err)
	}
	return nil
}

// keepAlive pushes the lock's expiry on every third of the TTL until
// Unlock, or until the lock is found taken over.
func (s *VaultStorage) keepAlive(name string, h *heldLock) {
	defer close(h.done)
	t := time.NewTicker(s.lockTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.lockTTL/3)
		err := s.refresh(ctx, name, h)
		cancel()
		if isCASMismatch(err) {
			return // lost: our entry expired and was taken over
		}
	}
}

// refresh rewrites a held lock's entry with a later expiry.
func (s *VaultStorage) refresh(ctx context.Context, name string, h *heldLock) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	exp := s.now().Add(s.lockTTL)
	if h.until.After(exp) {
		exp = h.until
	}
	v, err := s.write(ctx, lockKey(name), lockData(h.token, exp, false), h.version)
	if err != nil {
		return fmt.Errorf("vault storage: refreshing lock %s: %w", name, err)
	}
	h.version = v
	return nil
}

// lockKey is the storage key of a lock's entry; lock names may hold "/".
func lockKey(name string) string {
	return locksDir + "/" + strings.ReplaceAll(name, "/", "_")
}

func lockData(owner string, expires time.Time, released bool) map[string]any {
	return map[string]any{"owner": owner, "expires": expires.UTC().Format(time.RFC3339Nano), "released": released}
}

func parseLock(data map[string]any) (lockEntry, bool) {
	if data == nil {
		return lockEntry{}, false
	}
	var e lockEntry
	e.Owner, _ = data["owner"].(string)
	exp, _ := data["expires"].(string)
	t, err := time.Parse(time.RFC3339Nano, exp)
	if err != nil {
		return lockEntry{}, false // unreadable: treat as expired
	}
	e.Expires = t
	e.Released, _ = data["released"].(bool)
	return e, true
}

// newToken returns a random lock-owner token.
func newToken() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails
	return hex.EncodeToString(b)
}
