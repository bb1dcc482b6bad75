package injector

import (
	"context"
	"errors"
	"testing"
	"time"
)

// OnRevoke reports each revocation: the superseded version once drained
// (in flight 0), one revoked at its grace with the requests still holding
// it, the current one at exit, and a failed attempt with its error.
func TestHolderOnRevoke(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, _ := newTestHolder(revokingSource{src})
	h.RevokeOld = true
	h.RevokeGrace = 10 * time.Second
	got := make(chan Revocation, 10)
	h.OnRevoke = func(r Revocation) { got <- r }
	src.set(tokens(clk, time.Hour))
	start(t, h)
	clk.WaitTimer(t, epoch.Add(40*time.Minute))
	fp1 := h.Status().Fingerprint

	// v1 drained: revoked once released.
	held := mustAcquire(t, h)
	if err := h.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		t.Fatalf("revocation reported while a request holds the value: %+v", r)
	default:
	}
	held.Release()
	r := <-got
	if r.Name != "api" || r.Version != 1 || r.Fingerprint != fp1 || r.Reason != "superseded" || r.InFlight != 0 || r.Err != nil {
		t.Errorf("drained revocation = %+v, want api v1 %s superseded, none in flight", r, fp1)
	}

	// v2 never released: revoked at its grace, one request still on it.
	held = mustAcquire(t, h)
	if err := h.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.WaitTimer(t, clk.Now().Add(10*time.Second))
	clk.Advance(10 * time.Second)
	if r := <-got; r.Version != 2 || r.Reason != "superseded" || r.InFlight != 1 {
		t.Errorf("graced revocation = %+v, want v2 superseded with 1 in flight", r)
	}
	held.Release()
	fp3 := h.Status().Fingerprint
	if err := h.Revoke(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.Version != 3 || r.Fingerprint != fp3 || r.Reason != "exit" || r.Err != nil {
		t.Errorf("revocation at exit = %+v, want v3 %s exit", r, fp3)
	}
}

type failingRevoker struct{ *fakeSource }

func (failingRevoker) Revoke(context.Context, *Secret) error { return errIssuer }

func TestHolderOnRevokeFailure(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, _ := newTestHolder(failingRevoker{src})
	var got []Revocation
	h.OnRevoke = func(r Revocation) { got = append(got, r) }
	src.set(tokens(clk, time.Hour))
	if err := h.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := h.Revoke(context.Background()); !errors.Is(err, errIssuer) {
		t.Fatalf("Revoke = %v, want the issuer's error", err)
	}
	if len(got) != 1 || got[0].Version != 1 || got[0].Reason != "exit" || !errors.Is(got[0].Err, errIssuer) {
		t.Errorf("OnRevoke saw %+v, want one failed exit revocation of v1", got)
	}
}
