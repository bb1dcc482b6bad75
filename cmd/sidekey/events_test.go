package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/events"
	"github.com/sidekey/sidekey/injector"
)

type fixedSource struct{ s *injector.Secret }

func (f fixedSource) Fetch(context.Context) (*injector.Secret, error) { return f.s, nil }

// The expiry watch reports a value passing expires_at once (stale while
// max_stale lasts), then once more when max_stale ends, and says when to
// look next.
func TestCheckExpiry(t *testing.T) {
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	cfg := &config.Config{Credentials: []config.Credential{
		{Name: "tok", Source: "exec", MaxStale: 5 * time.Second},
		{Name: "key", Source: "env"},
	}}
	set, err := injector.NewSet(cfg.Credentials, injector.SetOptions{NewSource: func(c config.Credential) (injector.Source, error) {
		if c.Name == "key" {
			return fixedSource{&injector.Secret{Value: "never-expires-1"}}, nil
		}
		return fixedSource{&injector.Secret{Value: "expiring-value-1", ExpiresAt: exp}}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range set.Names() {
		if err := set.Holder(n).Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ev := newEventSources(cfg, set)
	sub := ev.broker.Subscribe(0, false)
	defer sub.Close()
	reported := map[expiryKey]bool{}
	for i, step := range []struct {
		now   time.Time
		next  time.Time
		state string // of the event published, "" for none
	}{
		{exp.Add(-time.Second), exp, ""},
		{exp, exp.Add(5 * time.Second), injector.StateStale},
		{exp.Add(time.Second), exp.Add(5 * time.Second), ""},
		{exp.Add(5 * time.Second), time.Time{}, injector.StateExpired},
		{exp.Add(time.Minute), time.Time{}, ""},
	} {
		next := ev.checkExpiry(step.now, reported)
		if !next.Equal(step.next) {
			t.Errorf("step %d: next %v, want %v", i, next, step.next)
		}
		select {
		case e := <-sub.C():
			if step.state == "" || e.Kind != events.CredentialExpired || e.Credential != "tok" || e.Version != 1 ||
				e.State != step.state || !e.ExpiresAt.Equal(exp) || e.Fingerprint == "" {
				t.Errorf("step %d: published %+v, want state %q", i, e, step.state)
			}
		default:
			if step.state != "" {
				t.Errorf("step %d: nothing published, want %s", i, step.state)
			}
		}
	}
}

// Caller refusals become at most one event a second per reason, counting
// the others.
func TestCallerRefusedEvents(t *testing.T) {
	ev := newEventSources(&config.Config{}, mustSet(t))
	sub := ev.broker.Subscribe(0, false)
	defer sub.Close()
	for range 50 {
		ev.callerRefused("host_not_allowed")
	}
	ev.callerRefused("caller_unauthenticated")
	var got []events.Event
	for len(sub.C()) > 0 {
		got = append(got, <-sub.C())
	}
	if len(got) != 2 || got[0].Reason != "host_not_allowed" || got[0].Count != 1 || got[1].Reason != "caller_unauthenticated" {
		t.Errorf("events %+v, want one per reason", got)
	}
}

func mustSet(t *testing.T) *injector.Set {
	set, err := injector.NewSet(nil, injector.SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestProblemTexts(t *testing.T) {
	p1 := config.Problem{File: "a.yaml", Line: 3, Msg: "x"}
	p2 := config.Problem{File: "a.yaml", Line: 9, Msg: "y"}
	for _, tc := range []struct {
		err  error
		want []string
	}{
		{errors.Join(p1, p2), []string{"a.yaml:3: x", "a.yaml:9: y"}},
		{errors.Join(errors.New("vault: a changed Vault connection needs a restart"), errors.New("tls: a change needs a restart")),
			[]string{"vault: a changed Vault connection needs a restart", "tls: a change needs a restart"}},
		{errors.New("listen 127.0.0.1:1: address in use"), []string{"listen 127.0.0.1:1: address in use"}},
	} {
		got := problemTexts(tc.err)
		if len(got) != len(tc.want) {
			t.Errorf("problemTexts(%v) = %q, want %q", tc.err, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("problemTexts(%v) = %q, want %q", tc.err, got, tc.want)
			}
		}
	}
}
