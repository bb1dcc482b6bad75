package certs

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestInfoJSON(t *testing.T) {
	ca := newTestCA(t, "info CA")
	_, _, leaf := ca.issue(t, "api.test", false, epoch, epoch.Add(time.Hour), "api.test", "127.0.0.1")
	b, err := json.Marshal(leafInfo("gw", KindInbound, leaf))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"gw","kind":"inbound","subjects":["api.test","127.0.0.1"],"issuer":"CN=info CA","serial":"` +
		formatSerial(leaf.SerialNumber) + `","not_before":"2030-01-01T00:00:00Z","not_after":"2030-01-01T01:00:00Z"}`
	if string(b) != want {
		t.Fatalf("JSON = %s\nwant   %s", b, want)
	}
	empty, _ := json.Marshal(Info{Name: "m", Kind: KindClient, Subjects: []string{}})
	if strings.Contains(string(empty), "not_before") || !strings.Contains(string(empty), `"subjects":[]`) {
		t.Fatalf("JSON of an empty Info = %s", empty)
	}
}
