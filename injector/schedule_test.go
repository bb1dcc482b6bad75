package injector

import (
	"testing"
	"time"

	"github.com/sidekey/sidekey/config"
)

func TestRefreshAt(t *testing.T) {
	now := epoch
	at := func(d time.Duration) time.Time { return now.Add(d) }
	tests := []struct {
		name            string
		issued, expires time.Time
		before          config.RefreshBefore
		every           time.Duration
		jitter          float64
		want            time.Time
	}{
		{"default share of lifetime", now, at(100 * time.Minute), config.RefreshBefore{}, 0, 0, at(100*time.Minute - time.Duration(config.DefaultRefreshBefore*float64(100*time.Minute)))},
		{"a third", now, at(60 * time.Minute), config.RefreshBefore{Fraction: 1.0 / 3}, 0, 0, at(40 * time.Minute)},
		{"fraction", now, at(60 * time.Minute), config.RefreshBefore{Fraction: 0.5}, 0, 0, at(30 * time.Minute)},
		{"fraction of a lifetime begun earlier", at(-30 * time.Minute), at(30 * time.Minute), config.RefreshBefore{Fraction: 1.0 / 3}, 0, 0, at(10 * time.Minute)},
		{"duration", now, at(60 * time.Minute), config.RefreshBefore{Duration: 5 * time.Minute}, 0, 0, at(55 * time.Minute)},
		{"duration wins over fraction", now, at(60 * time.Minute), config.RefreshBefore{Fraction: 0.5, Duration: 5 * time.Minute}, 0, 0, at(55 * time.Minute)},
		{"full jitter takes a tenth of the lead", now, at(60 * time.Minute), config.RefreshBefore{Fraction: 1.0 / 3}, 0, 1, at(38 * time.Minute)},
		{"half jitter", now, at(60 * time.Minute), config.RefreshBefore{Duration: 10 * time.Minute}, 0, 0.5, at(49*time.Minute + 30*time.Second)},
		{"refresh every caps the wait", now, at(60 * time.Minute), config.RefreshBefore{Fraction: 1.0 / 3}, 10 * time.Minute, 0, at(10 * time.Minute)},
		{"refresh every beyond the schedule", now, at(60 * time.Minute), config.RefreshBefore{Fraction: 1.0 / 3}, 2 * time.Hour, 0, at(40 * time.Minute)},
		{"no expiry, no refresh every: never", now, time.Time{}, config.RefreshBefore{}, 0, 0, time.Time{}},
		{"no expiry, refresh every", now, time.Time{}, config.RefreshBefore{}, 5 * time.Minute, 0.9, at(5 * time.Minute)},
		{"lead longer than the life left: floored", at(-59 * time.Minute), at(time.Minute), config.RefreshBefore{Duration: 5 * time.Minute}, 0, 0, at(minRefreshDelay)},
		{"fraction above one is the whole life", now, at(time.Hour), config.RefreshBefore{Fraction: 2}, 0, 0, at(minRefreshDelay)},
		{"already expired", at(-2 * time.Hour), at(-time.Hour), config.RefreshBefore{}, 0, 0, at(minRefreshDelay)},
		{"refresh every below the floor is honoured", at(-2 * time.Hour), at(-time.Hour), config.RefreshBefore{}, 100 * time.Millisecond, 0, at(100 * time.Millisecond)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := refreshAt(now, tt.issued, tt.expires, tt.before, tt.every, tt.jitter)
			if !got.Equal(tt.want) {
				t.Errorf("refreshAt = %v, want %v", got.Sub(now), tt.want.Sub(now))
			}
		})
	}
}

func TestRefreshAtJitterBounds(t *testing.T) {
	now := epoch
	expires := now.Add(90 * time.Minute)
	lead := 30 * time.Minute
	latest := expires.Add(-lead)
	earliest := latest.Add(-lead / 10)
	for _, j := range []float64{0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999999} {
		got := refreshAt(now, now, expires, config.RefreshBefore{Fraction: 1.0 / 3}, 0, j)
		if got.After(latest) || got.Before(earliest) {
			t.Errorf("jitter %v: refresh at %v, want within [%v, %v]", j, got.Sub(now), earliest.Sub(now), latest.Sub(now))
		}
	}
}

func TestRetryDelay(t *testing.T) {
	s := time.Second
	tests := []struct {
		failures int
		lo, hi   time.Duration
		jitter   float64
		want     time.Duration
	}{
		{0, s, time.Minute, 0, s},
		{1, s, time.Minute, 0, 2 * s},
		{2, s, time.Minute, 0, 4 * s},
		{5, s, time.Minute, 0, 32 * s},
		{6, s, time.Minute, 0, time.Minute},
		{7, s, time.Minute, 0, time.Minute},
		{1 << 20, s, time.Minute, 0, time.Minute}, // no overflow
		{0, s, time.Minute, 1, 750 * time.Millisecond},
		{3, s, time.Minute, 0.5, 7 * s},
		{9, s, time.Minute, 1, 45 * s},
		{0, 0, 0, 0, defaultRetryMin},
		{100, 0, 0, 0, defaultRetryMax},
		{3, 30 * s, 10 * s, 0, 30 * s}, // max below min: min
		{0, 30 * s, 30 * s, 0, 30 * s},
	}
	for _, tt := range tests {
		if got := Backoff(tt.failures, tt.lo, tt.hi, tt.jitter); got != tt.want {
			t.Errorf("Backoff(%d, %v, %v, %v) = %v, want %v", tt.failures, tt.lo, tt.hi, tt.jitter, got, tt.want)
		}
	}
}

func TestRetryDelayGrowsToCap(t *testing.T) {
	var prev time.Duration
	for f := 0; f < 20; f++ {
		d := Backoff(f, time.Second, time.Minute, 0)
		if d < prev || d > time.Minute {
			t.Fatalf("failure %d: delay %v after %v", f, d, prev)
		}
		prev = d
	}
	if prev != time.Minute {
		t.Errorf("delay settles at %v, want the cap", prev)
	}
}

func TestRetryAt(t *testing.T) {
	now := epoch
	tests := []struct {
		name    string
		delay   time.Duration
		expires time.Time
		want    time.Time
	}{
		{"no value", 30 * time.Second, time.Time{}, now.Add(30 * time.Second)},
		{"expiry far ahead", 30 * time.Second, now.Add(time.Hour), now.Add(30 * time.Second)},
		{"not past expiry without trying", 30 * time.Second, now.Add(10 * time.Second), now.Add(10 * time.Second)},
		{"already expired", 30 * time.Second, now.Add(-time.Second), now.Add(30 * time.Second)},
		{"expires now", 30 * time.Second, now, now.Add(30 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RetryAt(now, tt.delay, tt.expires); !got.Equal(tt.want) {
				t.Errorf("retryAt = %v, want %v", got.Sub(now), tt.want.Sub(now))
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	base := &Secret{Value: "tok", Fields: map[string]string{"username": "svc", "password": "pw"}}
	fp := fingerprint(key, base)
	if len(fp) != fingerprintLen {
		t.Fatalf("fingerprint %q has length %d", fp, len(fp))
	}
	same := &Secret{Value: "tok", Fields: map[string]string{"password": "pw", "username": "svc"},
		Version: 9, ExpiresAt: epoch, Handle: "lease"}
	if got := fingerprint(key, same); got != fp {
		t.Errorf("same value and fields, other metadata: %q != %q", got, fp)
	}
	differ := map[string]struct {
		key []byte
		s   *Secret
	}{
		"value":         {key, &Secret{Value: "tok2", Fields: base.Fields}},
		"field value":   {key, &Secret{Value: "tok", Fields: map[string]string{"username": "svc", "password": "pw2"}}},
		"field name":    {key, &Secret{Value: "tok", Fields: map[string]string{"user": "svc", "password": "pw"}}},
		"missing field": {key, &Secret{Value: "tok", Fields: map[string]string{"username": "svc"}}},
		"key":           {[]byte("another key"), base},
		"parts shifted": {key, &Secret{Value: "to", Fields: map[string]string{"kusername": "svc", "password": "pw"}}},
	}
	for name, d := range differ {
		if fingerprint(d.key, d.s) == fp {
			t.Errorf("%s: fingerprints collide", name)
		}
	}
	if fingerprint(key, &Secret{Value: "ab"}) == fingerprint(key, &Secret{Value: "a", Fields: map[string]string{"b": ""}}) {
		t.Error("value/field boundary is ambiguous")
	}
}
