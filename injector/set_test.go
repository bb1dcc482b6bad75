package injector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sidekey/sidekey/config"
)

// sourcesByName is a SetOptions.NewSource serving fake sources.
func sourcesByName(srcs map[string]Source) func(config.Credential) (Source, error) {
	return func(c config.Credential) (Source, error) {
		if s, ok := srcs[c.Name]; ok {
			return s, nil
		}
		return nil, fmt.Errorf("credential %q: no such fake", c.Name)
	}
}

func TestNewSet(t *testing.T) {
	clk := newFakeClock()
	secrets := newFakeSecrets()
	creds := []config.Credential{
		{Name: "zeta", Source: "exec", Refresh: 10 * time.Minute},
		{Name: "alpha", Source: "vault-lease", RevokeOld: true, MaxStale: time.Minute,
			RefreshBefore: config.RefreshBefore{Duration: 5 * time.Minute}},
	}
	srcs := map[string]Source{"zeta": newFakeSource(nil), "alpha": newFakeSource(nil)}
	s, err := NewSet(creds, SetOptions{Clock: clk, Secrets: secrets, NewSource: sourcesByName(srcs)})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Names(); !slices.Equal(got, []string{"alpha", "zeta"}) {
		t.Errorf("Names() = %v", got)
	}
	a, z := s.Holder("alpha"), s.Holder("zeta")
	if a == nil || z == nil || s.Holder("missing") != nil {
		t.Fatal("Holder by name")
	}
	if a.SourceName != "vault-lease" || a.Source != srcs["alpha"] || !a.RevokeOld || a.MaxStale != time.Minute ||
		a.RefreshBefore.Duration != 5*time.Minute || a.Clock != clk {
		t.Errorf("alpha holder: %+v", a)
	}
	if z.RefreshEvery != 10*time.Minute || z.RevokeOld {
		t.Errorf("zeta holder: %+v", z)
	}
	if len(a.Key) != 32 || string(a.Key) != string(z.Key) {
		t.Error("holders must share one 32-byte key")
	}
	other, err := NewSet(creds, SetOptions{NewSource: sourcesByName(srcs)})
	if err != nil {
		t.Fatal(err)
	}
	if string(other.Holder("alpha").Key) == string(a.Key) {
		t.Error("two sets drew the same key")
	}
	if a.Secrets == nil || a.Secrets != z.Secrets {
		t.Error("holders must share one SecretSet")
	}
}

func TestNewSetReportsEveryProblem(t *testing.T) {
	creds := []config.Credential{{Name: "a"}, {Name: "b"}, {Name: "a"}}
	_, err := NewSet(creds, SetOptions{NewSource: sourcesByName(map[string]Source{"a": newFakeSource(nil)})})
	if err == nil {
		t.Fatal("NewSet succeeded")
	}
	for _, want := range []string{`credential "b": no such fake`, `credential "a" is defined twice`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestNewSetDefaultSources(t *testing.T) {
	t.Setenv("SIDEKEY_SET_TEST_TOKEN", "from-env")
	s, err := NewSet([]config.Credential{{Name: "ci", Source: config.SourceEnv, EnvName: "SIDEKEY_SET_TEST_TOKEN"}}, SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Holder("ci")
	if err := h.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	v := mustAcquire(t, h)
	defer v.Release()
	if v.Secret().Value != "from-env" {
		t.Errorf("value %q", v.Secret().Value)
	}
}

func TestSetRun(t *testing.T) {
	clk := newFakeClock()
	fa, fb := newFakeSource(tokens(clk, time.Hour)), newFakeSource(failing)
	s, err := NewSet([]config.Credential{{Name: "b"}, {Name: "a"}},
		SetOptions{Clock: clk, NewSource: sourcesByName(map[string]Source{"a": fa, "b": fb})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	// Each holder arms a timer once its first fetch is over.
	clk.BlockUntil(t, 2)
	st := s.Statuses()
	if len(st) != 2 || st[0].Name != "a" || st[1].Name != "b" {
		t.Fatalf("statuses %+v", st)
	}
	if st[0].State != StateFresh || st[0].Version != 1 || st[1].State != StateFailed || st[1].LastError == "" {
		t.Errorf("statuses %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestSetRevoke(t *testing.T) {
	clk := newFakeClock()
	fa, fb := newFakeSource(tokens(clk, time.Hour)), newFakeSource(tokens(clk, time.Hour))
	s, err := NewSet([]config.Credential{{Name: "a"}, {Name: "b"}, {Name: "c"}}, SetOptions{
		Clock: clk,
		NewSource: sourcesByName(map[string]Source{
			"a": revokingSource{fa}, "b": revokingSource{fb}, "c": newFakeSource(tokens(clk, 0)),
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range s.Names() {
		if err := s.Holder(name).Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Revoke(ctx); err != nil {
		t.Fatal(err)
	}
	if a, b := fa.revokedValues(), fb.revokedValues(); len(a) != 1 || len(b) != 1 {
		t.Errorf("revoked %v and %v, want one value each", a, b)
	}
	for _, name := range s.Names() {
		if _, err := s.Holder(name).Acquire(); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: Acquire after Revoke: %v", name, err)
		}
	}
}

func TestSetValueSharedByCredentials(t *testing.T) {
	clk := newFakeClock()
	secrets := newFakeSecrets()
	fa := newFakeSource(func(n int64) (*Secret, error) {
		if n == 1 {
			return &Secret{Value: "shared"}, nil
		}
		return &Secret{Value: fmt.Sprintf("a-%d", n)}, nil
	})
	fb := newFakeSource(func(int64) (*Secret, error) { return &Secret{Value: "shared"}, nil })
	s, err := NewSet([]config.Credential{{Name: "a"}, {Name: "b"}},
		SetOptions{Clock: clk, Secrets: secrets, NewSource: sourcesByName(map[string]Source{"a": fa, "b": fb})})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Holder("b").Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// a rotates away from the shared value until it is forgotten.
	for range maxIdleRetired + 3 {
		if err := s.Holder("a").Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !secrets.has("shared") {
		t.Error("a value still current for b was unregistered")
	}
}

func TestCountedSet(t *testing.T) {
	under := newFakeSecrets()
	c := newCountedSet(under)
	if newCountedSet(c) != c || newCountedSet(nil) != nil {
		t.Error("newCountedSet must not wrap twice, nor wrap nil")
	}
	c.Add("x", "y")
	c.Add("x")
	c.Remove("x", "y")
	if !under.has("x") || under.has("y") {
		t.Error("x was added twice and removed once: it stays; y goes")
	}
	c.Remove("x")
	c.Remove("x", "never-added")
	if under.count() != 0 {
		t.Errorf("%d values left", under.count())
	}
}

func TestReconfigureKeepsUnchangedHolders(t *testing.T) {
	env := func(name, variable string, line int) config.Credential {
		return config.Credential{Name: name, Source: config.SourceEnv, EnvName: variable, Line: line}
	}
	s, err := NewSet([]config.Credential{env("keep", "A", 1), env("change", "B", 2), env("drop", "C", 3)}, SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	next, added, removed, err := s.Reconfigure([]config.Credential{
		env("keep", "A", 10), // moved in the file: still the same credential
		env("change", "B2", 11),
		env("new", "D", 12),
	}, SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if next.Holder("keep") != s.Holder("keep") {
		t.Error("unchanged credential got a new holder")
	}
	if next.Holder("change") == s.Holder("change") || next.Holder("change") == nil {
		t.Error("changed credential kept its holder")
	}
	if next.Holder("drop") != nil || next.Holder("new") == nil {
		t.Error("removed/new credential wrong")
	}
	names := func(hs []*Holder) (out []string) {
		for _, h := range hs {
			out = append(out, h.Name)
		}
		slices.Sort(out)
		return out
	}
	if got := names(added); !slices.Equal(got, []string{"change", "new"}) {
		t.Errorf("added %v", got)
	}
	if got := names(removed); !slices.Equal(got, []string{"change", "drop"}) {
		t.Errorf("removed %v", got)
	}
	if s.Holder("drop") == nil {
		t.Error("Reconfigure modified the old set")
	}
	if _, _, _, err := s.Reconfigure([]config.Credential{env("x", "", 1)}, SetOptions{}); err == nil {
		t.Error("a bad credential was accepted")
	}
}
