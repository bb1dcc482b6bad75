package acme

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// certEvent is the part of a /v1/events event this test reads.
type certEvent struct {
	ID              uint64    `json:"id"`
	Kind            string    `json:"kind"`
	Certificate     string    `json:"certificate"`
	CertificateKind string    `json:"certificate_kind"`
	Serial          string    `json:"serial"`
	OldSerial       string    `json:"old_serial"`
	NotAfter        time.Time `json:"not_after"`
	arrived         time.Time
}

// TestEventsCertificateRenewal: Pebble issues 12-second certificates and
// sidekey renews them; /v1/events reports the first as certificate.issued
// and the next as certificate.renewed (with the serial it replaced), each
// within a second of /v1/certificates showing it, and never key material.
func TestEventsCertificateRenewal(t *testing.T) {
	data := t.TempDir()
	upURL, _ := newUpstream(t)
	p := newPebble(t, data)
	sk := startSidekey(t, data, acmeConfig(p, upURL, renewKnob), tlsListeners)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sk.AdminURL+"/v1/events?since=0", nil)
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/events: %v %v", resp, err)
	}
	defer resp.Body.Close()
	var mu sync.Mutex
	var got []certEvent
	var raw strings.Builder
	go func() {
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			mu.Lock()
			raw.WriteString(line)
			if d, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "data: "); ok {
				e := certEvent{arrived: time.Now()}
				if json.Unmarshal([]byte(d), &e) == nil && strings.HasPrefix(e.Kind, "certificate.") {
					got = append(got, e)
				}
			}
			mu.Unlock()
		}
	}()

	p.start(t, port(t, sk.Addrs["tls"]), renewValidity)
	// Watch /v1/certificates for the first certificate and its renewal.
	type shown struct {
		serial string
		at     time.Time
	}
	var serials []shown
	limit := time.Now().Add(30*time.Second + time.Duration(renewValidity)*time.Second*2)
	for len(serials) < 2 {
		if time.Now().After(limit) {
			t.Fatalf("no renewal seen on /v1/certificates (serials %v, %d new orders)", serials, p.NewOrders())
		}
		if s := sk.inbound(t).Serial; s != "" && (len(serials) == 0 || serials[len(serials)-1].serial != s) {
			serials = append(serials, shown{s, time.Now()})
		}
		time.Sleep(50 * time.Millisecond)
	}

	find := func(kind, serial string) certEvent {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			for _, e := range got {
				if e.Kind == kind && e.Serial == serial {
					mu.Unlock()
					return e
				}
			}
			mu.Unlock()
			if time.Now().After(deadline) {
				t.Fatalf("no %s event for serial %s; got %+v", kind, serial, got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	issued := find("certificate.issued", serials[0].serial)
	renewed := find("certificate.renewed", serials[1].serial)
	for _, c := range []struct {
		e    certEvent
		seen time.Time
	}{{issued, serials[0].at}, {renewed, serials[1].at}} {
		d := c.e.arrived.Sub(c.seen)
		if d < 0 {
			d = -d
		}
		if d > time.Second {
			t.Errorf("%s (serial %s) arrived %v apart from /v1/certificates showing it, want within 1s", c.e.Kind, c.e.Serial, d)
		} else {
			t.Logf("%s (serial %s) arrived %v from /v1/certificates showing it", c.e.Kind, c.e.Serial, d.Round(time.Millisecond))
		}
	}
	if issued.Certificate != domain || issued.CertificateKind != "inbound" || issued.OldSerial != "" || issued.NotAfter.IsZero() {
		t.Errorf("certificate.issued: %+v", issued)
	}
	if renewed.OldSerial != serials[0].serial || renewed.Certificate != domain {
		t.Errorf("certificate.renewed: %+v, want old_serial %s", renewed, serials[0].serial)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(raw.String(), "PRIVATE KEY") {
		t.Error("the event stream holds key material")
	}
}
