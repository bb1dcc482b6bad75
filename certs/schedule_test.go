package certs

import (
	"math/big"
	"testing"
	"time"
)

func TestRenewAt(t *testing.T) {
	t0 := epoch
	for _, tc := range []struct {
		name              string
		now, nb, na, want time.Time
		jitter            float64
	}{
		{"two thirds of an hour", t0, t0, t0.Add(time.Hour), t0.Add(40 * time.Minute), 0},
		{"full jitter is 5% earlier", t0, t0, t0.Add(time.Hour), t0.Add(37 * time.Minute), 1},
		{"backdated notBefore", t0, t0.Add(-time.Hour), t0.Add(2 * time.Hour), t0.Add(time.Hour), 0},
		{"already due: not before a second", t0.Add(time.Hour), t0, t0.Add(time.Hour), t0.Add(time.Hour + time.Second), 0},
	} {
		if got := renewAt(tc.now, tc.nb, tc.na, tc.jitter); !got.Equal(tc.want) {
			t.Errorf("%s: renewAt = %v, want %v", tc.name, got.Sub(t0), tc.want.Sub(t0))
		}
	}
}

func TestRetryDelay(t *testing.T) {
	for _, tc := range []struct {
		failures int
		lo, hi   time.Duration
		jitter   float64
		want     time.Duration
	}{
		{0, 0, 0, 0, time.Second},
		{1, 0, 0, 0, 2 * time.Second},
		{10, 0, 0, 0, time.Minute},
		{0, 0, 0, 1, 750 * time.Millisecond},
		{3, 100 * time.Millisecond, time.Second, 0, 800 * time.Millisecond},
		{2, time.Second, 10 * time.Millisecond, 0, time.Second}, // hi below lo
	} {
		if got := retryDelay(tc.failures, tc.lo, tc.hi, tc.jitter); got != tc.want {
			t.Errorf("retryDelay(%d, %v, %v, %v) = %v, want %v", tc.failures, tc.lo, tc.hi, tc.jitter, got, tc.want)
		}
	}
}

func TestRetryAt(t *testing.T) {
	if got := retryAt(epoch, time.Minute, epoch.Add(time.Second)); !got.Equal(epoch.Add(time.Second)) {
		t.Errorf("retry past the expiry: %v", got)
	}
	if got := retryAt(epoch, time.Minute, epoch.Add(-time.Second)); !got.Equal(epoch.Add(time.Minute)) {
		t.Errorf("retry after the expiry passed: %v", got)
	}
	if got := retryAt(epoch, time.Minute, time.Time{}); !got.Equal(epoch.Add(time.Minute)) {
		t.Errorf("retry without a certificate: %v", got)
	}
}

func TestFormatSerial(t *testing.T) {
	for _, tc := range []struct {
		n    *big.Int
		want string
	}{
		{big.NewInt(0), "00"},
		{big.NewInt(0x3a0f9c), "3a:0f:9c"},
		{nil, ""},
	} {
		if got := formatSerial(tc.n); got != tc.want {
			t.Errorf("formatSerial(%v) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
