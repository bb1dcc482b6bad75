package certs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// testStorageContract checks the certmagic.Storage contract (see
// certmagic's storage.go) on a fresh storage from newStorage.
func testStorageContract(t *testing.T, newStorage func(t *testing.T) certmagic.Storage) {
	ctx := context.Background()

	t.Run("store load stat", func(t *testing.T) {
		s := newStorage(t)
		if _, err := s.Load(ctx, "acme/a.key"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load of a missing key: %v, want fs.ErrNotExist", err)
		}
		if _, err := s.Stat(ctx, "acme/a.key"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Stat of a missing key: %v, want fs.ErrNotExist", err)
		}
		if s.Exists(ctx, "acme/a.key") {
			t.Fatal("Exists of a missing key")
		}
		val := []byte{0, 1, 2, 0xff, '\n'} // binary-safe
		before := time.Now().Add(-time.Second)
		if err := s.Store(ctx, "acme/a.key", val); err != nil {
			t.Fatal(err)
		}
		val[0] = 9 // the storage keeps its own copy
		got, err := s.Load(ctx, "acme/a.key")
		if err != nil || string(got) != "\x00\x01\x02\xff\n" {
			t.Fatalf("Load = %q, %v", got, err)
		}
		ki, err := s.Stat(ctx, "acme/a.key")
		if err != nil || ki.Key != "acme/a.key" || !ki.IsTerminal || ki.Size != 5 || ki.Modified.Before(before) {
			t.Fatalf("Stat = %+v, %v", ki, err)
		}
		di, err := s.Stat(ctx, "acme")
		if err != nil || di.IsTerminal {
			t.Fatalf("Stat of a directory = %+v, %v", di, err)
		}
		if !s.Exists(ctx, "acme/a.key") || !s.Exists(ctx, "acme") {
			t.Fatal("Exists is false for a file or its directory")
		}
		if err := s.Store(ctx, "acme/a.key", []byte("v2")); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Load(ctx, "acme/a.key"); string(got) != "v2" {
			t.Fatalf("Load after overwrite = %q", got)
		}
	})

	t.Run("list", func(t *testing.T) {
		s := newStorage(t)
		for _, k := range []string{"certificates/ca/x.test/x.test.crt", "certificates/ca/x.test/x.test.key",
			"certificates/ca/y.test/y.test.crt", "certificatesx/other", "ocsp/z"} {
			if err := s.Store(ctx, k, []byte(k)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.List(ctx, "certificates/ca", false)
		if want := []string{"certificates/ca/x.test", "certificates/ca/y.test"}; err != nil || !sameStrings(got, want) {
			t.Fatalf("List(non-recursive) = %v, %v; want %v", got, err, want)
		}
		got, err = s.List(ctx, "certificates", true)
		want := []string{"certificates/ca", "certificates/ca/x.test", "certificates/ca/x.test/x.test.crt",
			"certificates/ca/x.test/x.test.key", "certificates/ca/y.test", "certificates/ca/y.test/y.test.crt"}
		if err != nil || !sameStrings(got, want) {
			t.Fatalf("List(recursive) = %v, %v; want %v", got, err, want)
		}
		if _, err := s.List(ctx, "nothing", true); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("List of nothing: %v, want fs.ErrNotExist", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		s := newStorage(t)
		for _, k := range []string{"d/a", "d/sub/b", "d/sub/c", "dx"} {
			if err := s.Store(ctx, k, []byte("v")); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Delete(ctx, "d/a"); err != nil {
			t.Fatal(err)
		}
		if s.Exists(ctx, "d/a") || !s.Exists(ctx, "d/sub/b") {
			t.Fatal("Delete of a file removed the wrong keys")
		}
		if err := s.Delete(ctx, "d"); err != nil {
			t.Fatal(err)
		}
		if s.Exists(ctx, "d/sub/b") || s.Exists(ctx, "d/sub/c") || s.Exists(ctx, "d") {
			t.Fatal("Delete of a directory left keys below it")
		}
		if !s.Exists(ctx, "dx") {
			t.Fatal(`Delete("d") removed "dx"`)
		}
		if err := s.Delete(ctx, "never-was"); err != nil {
			t.Fatalf("Delete of a missing key: %v", err)
		}
	})

	t.Run("lock excludes", func(t *testing.T) {
		s := newStorage(t)
		const workers, rounds = 4, 3
		var inside, maxInside atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, workers*rounds)
		for range workers {
			wg.Go(func() {
				for range rounds {
					if err := s.Lock(ctx, "issue_cert_x.test"); err != nil {
						errs <- err
						return
					}
					n := inside.Add(1)
					for m := maxInside.Load(); n > m && !maxInside.CompareAndSwap(m, n); m = maxInside.Load() {
					}
					runtime.Gosched() // give a second holder its chance to get in
					inside.Add(-1)
					if err := s.Unlock(ctx, "issue_cert_x.test"); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if maxInside.Load() != 1 {
			t.Fatalf("%d holders inside the lock at once", maxInside.Load())
		}
	})

	t.Run("lock waits and honours ctx", func(t *testing.T) {
		s := newStorage(t)
		if err := s.Lock(ctx, "l"); err != nil {
			t.Fatal(err)
		}
		if tl, ok := s.(certmagic.TryLocker); ok {
			if got, err := tl.TryLock(ctx, "l"); got || err != nil {
				t.Fatalf("TryLock of a held lock = %v, %v", got, err)
			}
			if got, err := tl.TryLock(ctx, "other"); !got || err != nil {
				t.Fatalf("TryLock of a free lock = %v, %v", got, err)
			}
			if err := s.Unlock(ctx, "other"); err != nil {
				t.Fatal(err)
			}
		}
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if err := s.Lock(short, "l"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock of a held lock with a short ctx: %v", err)
		}
		got := make(chan error, 1)
		go func() { got <- s.Lock(ctx, "l") }()
		if err := s.Unlock(ctx, "l"); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(waitLimit):
			t.Fatal("Lock did not return after Unlock")
		}
		if err := s.Unlock(ctx, "l"); err != nil {
			t.Fatal(err)
		}
		if err := s.Unlock(ctx, "l"); !errors.Is(err, ErrNotLocked) {
			t.Fatalf("Unlock of a free lock: %v, want ErrNotLocked", err)
		}
	})
}

func sameStrings(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestMemoryStorage(t *testing.T) {
	testStorageContract(t, func(*testing.T) certmagic.Storage { return &MemoryStorage{} })
}

func TestMemoryStorageRejectsBadKeys(t *testing.T) {
	s := &MemoryStorage{}
	for _, k := range []string{"", ".", "/abs", "../up"} {
		if err := s.Store(context.Background(), k, nil); err == nil {
			t.Errorf("Store(%q) succeeded", k)
		}
	}
}

// TestRedactStorage: every private key stored or loaded through the
// inbound manager's storage is registered, replaced keys are removed, and
// deleting removes them.
func TestRedactStorage(t *testing.T) {
	ctx := context.Background()
	ca := newTestCA(t, "redact")
	_, key1, _ := ca.issue(t, "a", false, time.Now(), time.Now().Add(time.Hour))
	_, key2, _ := ca.issue(t, "a", false, time.Now(), time.Now().Add(time.Hour))
	secrets := &recordingSecrets{}
	inner := &MemoryStorage{}
	s := newRedactStorage(inner, secrets)

	if err := s.Store(ctx, "certificates/ca/a/a.key", key1); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "certificates/ca/a/a.json", []byte(`{"sans":["a"]}`)); err != nil {
		t.Fatal(err)
	}
	if !secrets.has(string(key1)) || len(secrets.live()) != len(keySecrets(key1)) {
		t.Fatalf("after Store: %d values live, want the key's %d", len(secrets.live()), len(keySecrets(key1)))
	}
	if err := s.Store(ctx, "certificates/ca/a/a.key", key2); err != nil {
		t.Fatal(err)
	}
	if secrets.has(string(key1)) || !secrets.has(string(key2)) {
		t.Fatal("a replaced key stayed registered, or its replacement was not")
	}
	// A key another replica stored is registered when loaded.
	if err := inner.Store(ctx, "acme/ca/users/x/x.key", key1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "acme/ca/users/x/x.key"); err != nil || !secrets.has(string(key1)) {
		t.Fatalf("Load did not register the key: %v", err)
	}
	if err := s.Delete(ctx, "certificates"); err != nil {
		t.Fatal(err)
	}
	if secrets.has(string(key2)) || !secrets.has(string(key1)) {
		t.Fatal("Delete removed the wrong registrations")
	}
	for _, v := range keySecrets(key1)[1:] {
		if len(v) < minKeyLine || v == string(key1) {
			t.Fatalf("registered line %q", v)
		}
	}
	if got := fmt.Sprint(s); got != "memory" {
		t.Fatalf("String() = %q", got)
	}
}
