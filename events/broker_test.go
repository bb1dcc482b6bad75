package events

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func publishN(b *Broker, n int) {
	for i := range n {
		b.Publish(Event{Kind: CredentialRotated, Credential: fmt.Sprintf("c%d", i)})
	}
}

func ids(es []Event) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func TestPublishStampsIDAndTime(t *testing.T) {
	at := time.Date(2026, 12, 8, 10, 0, 0, 0, time.FixedZone("X", 3600))
	b := &Broker{Now: func() time.Time { return at }}
	e := b.Publish(Event{Kind: ReloadApplied})
	if e.ID != 1 || !e.Time.Equal(at) || e.Time.Location() != time.UTC {
		t.Errorf("first event = id %d time %v, want id 1 at %v in UTC", e.ID, e.Time, at)
	}
	set := at.Add(-time.Minute)
	if e := b.Publish(Event{Kind: ReloadApplied, Time: set}); e.ID != 2 || !e.Time.Equal(set) {
		t.Errorf("second event = id %d time %v, want id 2 at its own time %v", e.ID, e.Time, set)
	}
	if b.Last() != 2 {
		t.Errorf("Last = %d, want 2", b.Last())
	}
}

// The ring keeps the last Size events; a replay gives those after the ID
// asked for, and says when some it asked for are gone.
func TestReplayFromRing(t *testing.T) {
	b := &Broker{Size: 5}
	publishN(b, 8) // ring holds 4..8
	for _, tc := range []struct {
		since  uint64
		replay bool
		want   []uint64
		missed bool
	}{
		{0, false, nil, false},
		{0, true, []uint64{4, 5, 6, 7, 8}, true},
		{2, true, []uint64{4, 5, 6, 7, 8}, true},
		{3, true, []uint64{4, 5, 6, 7, 8}, false},
		{6, true, []uint64{7, 8}, false},
		{8, true, nil, false},
		// An ID from the future: a client of an earlier process.
		{500, true, []uint64{4, 5, 6, 7, 8}, true},
	} {
		s := b.Subscribe(tc.since, tc.replay)
		if got := ids(s.Replay); fmt.Sprint(got) != fmt.Sprint(tc.want) || s.Missed != tc.missed {
			t.Errorf("Subscribe(%d, %v): replay %v missed %v, want %v missed %v",
				tc.since, tc.replay, got, s.Missed, tc.want, tc.missed)
		}
		s.Close()
	}
}

func TestDefaultRingIsAThousand(t *testing.T) {
	b := &Broker{}
	publishN(b, 1500)
	s := b.Subscribe(0, true)
	defer s.Close()
	if n := len(s.Replay); n != 1000 || s.Replay[0].ID != 501 || s.Replay[999].ID != 1500 {
		t.Errorf("replay of %d events from %d, want 1000 from 501", n, s.Replay[0].ID)
	}
}

// A subscriber sees, after its replay, exactly the events published after
// it subscribed: no gap, no repeat, even while publishers run.
func TestReplayJoinsLiveWithoutGap(t *testing.T) {
	b := &Broker{Size: 5000, Buffer: 10000}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { publishN(b, 500) })
	}
	publishN(b, 10)
	s := b.Subscribe(0, true)
	wg.Wait()
	s.Close()
	next := uint64(1)
	for _, e := range s.Replay {
		if e.ID != next {
			t.Fatalf("replay has %d where %d was due", e.ID, next)
		}
		next++
	}
	for e := range s.C() {
		if e.ID != next {
			t.Fatalf("live has %d where %d was due", e.ID, next)
		}
		next++
	}
	if next != 2011 {
		t.Errorf("saw up to %d, want 2010", next-1)
	}
}

// A subscriber that does not read is dropped once its backlog is full;
// Publish never waits for it, and a subscriber that keeps up stays.
func TestSlowSubscriberDroppedWithoutBlocking(t *testing.T) {
	b := &Broker{Buffer: 8}
	stuck := b.Subscribe(0, false)
	done := make(chan struct{})
	go func() {
		publishN(b, 5000)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked on a subscriber that does not read")
	}
	if !stuck.Dropped() || b.Dropped() != 1 {
		t.Errorf("the subscriber that never read: dropped %v (broker counted %d), want dropped once", stuck.Dropped(), b.Dropped())
	}
	n := 0
	for range stuck.C() { // closed after its 8 buffered events
		n++
	}
	if n != 8 {
		t.Errorf("the dropped subscriber's channel held %d events, want its 8 buffered", n)
	}
	stuck.Close() // after the drop: no panic

	live := b.Subscribe(b.Last(), true)
	for range 8 {
		b.Publish(Event{Kind: ReloadApplied})
	}
	if live.Dropped() || len(live.C()) != 8 || b.Subscribers() != 1 {
		t.Errorf("a subscriber within its backlog: dropped %v, %d queued, %d subscribers; want kept, 8, 1",
			live.Dropped(), len(live.C()), b.Subscribers())
	}
	live.Close()
	if b.Subscribers() != 0 {
		t.Errorf("%d subscribers left, want 0", b.Subscribers())
	}
}

func TestCloseTwice(t *testing.T) {
	b := &Broker{}
	s := b.Subscribe(0, false)
	s.Close()
	s.Close()
	if _, ok := <-s.C(); ok {
		t.Error("channel open after Close")
	}
	b.Publish(Event{Kind: ReloadApplied}) // nobody to send to
}

func BenchmarkPublish(b *testing.B) {
	br := &Broker{}
	s := br.Subscribe(0, false)
	go func() {
		for range s.C() {
		}
	}()
	e := Event{Kind: CredentialRotated, Credential: "github", Version: 3, Fingerprint: "0123456789abcdef"}
	b.ReportAllocs()
	for b.Loop() {
		br.Publish(e)
	}
	s.Close()
}
