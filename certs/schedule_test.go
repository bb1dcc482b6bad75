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
		{"backdated notBefore counts from receipt", t0, t0.Add(-time.Hour), t0.Add(2 * time.Hour), t0.Add(80 * time.Minute), 0},
		{"5s certificate backdated 30s", t0, t0.Add(-30 * time.Second), t0.Add(5 * time.Second), t0.Add(3333333333), 0},
		{"already due: not before a second", t0.Add(time.Hour), t0, t0.Add(time.Hour), t0.Add(time.Hour + time.Second), 0},
	} {
		if got := renewAt(tc.now, tc.nb, tc.na, tc.jitter); !got.Equal(tc.want) {
			t.Errorf("%s: renewAt = %v, want %v", tc.name, got.Sub(t0), tc.want.Sub(t0))
		}
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
